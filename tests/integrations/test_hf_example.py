"""End-to-end tests of examples/hf_text_classification.py on a tiny local BERT (no download)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import csv
import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertTokenizer

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "hf_text_classification.py"

POSITIVE = ["good", "great", "excellent", "love", "happy", "wonderful", "nice", "best", "fun", "superb"]
NEGATIVE = ["bad", "awful", "terrible", "hate", "sad", "boring", "worst", "poor", "ugly", "dull"]
NEUTRAL = ["the", "movie", "film", "was", "a", "plot", "actor", "story", "it", "this", "is", "very", "really", "and"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *NEUTRAL]


def load_script() -> ModuleType:
    name = "torchvat_example_hf_text_classification"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialized 1-layer BERT classifier and its WordPiece tokenizer, saved locally."""
    root = tmp_path_factory.mktemp("hf-example")
    (root / "vocab").mkdir()
    (root / "vocab" / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    # from_pretrained on a directory holding vocab.txt: the constructor's argument name differs across versions
    tokenizer = BertTokenizer.from_pretrained(root / "vocab", do_lower_case=True, local_files_only=True)
    assert tokenizer("Great film")["input_ids"] == [2, VOCAB.index("great"), VOCAB.index("film"), 3]
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=2,
    )
    out = root / "model"
    BertForSequenceClassification(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def sentence(i: int, words: list[str]) -> str:
    return f"the movie was {words[i % len(words)]} and {words[(i + 3) % len(words)]}"


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "label")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    """Train CSV: 8 labeled rows (pos/neg), 5 with an empty label and 3 with -1; test CSV: 6 rows."""
    labeled = [(sentence(i, POSITIVE), "pos") for i in range(4)] + [(sentence(i, NEGATIVE), "neg") for i in range(4)]
    empty = [(sentence(i, POSITIVE if i % 2 else NEGATIVE), "") for i in range(4, 9)]
    minus_one = [(sentence(i, NEGATIVE if i % 2 else POSITIVE), "-1") for i in range(5, 8)]
    train = write_csv(tmp_path / "train.csv", [*labeled, *empty, *minus_one])
    test_rows = [
        (sentence(i, words), label) for i in (1, 5, 8) for words, label in ((POSITIVE, "pos"), (NEGATIVE, "neg"))
    ]
    test = write_csv(tmp_path / "test.csv", test_rows)
    return train, test


def test_end_to_end_semi_supervised(script, model_dir, data, tmp_path, capsys):
    train, test = data
    out = tmp_path / "out"
    # fmt: off
    summary = script.main([
        "--model", str(model_dir), "--train-csv", str(train), "--test-csv", str(test),
        "--method", "at+vat", "--eps", "1.0", "--alpha", "1.0", "--regularize", "all",
        "--max-steps", "5", "--batch-size", "16", "--lr", "1e-2", "--max-length", "16",
        "--output-dir", str(out), "--seed", "0", "--cpu", "--save",
    ])
    # fmt: on
    printed = capsys.readouterr().out
    assert 'label mapping: {"neg": 0, "pos": 1}' in printed
    assert summary["n_train"] == 16
    assert summary["n_labeled"] == 8
    assert summary["n_unlabeled"] == 8
    assert summary["label_mapping"] == {"neg": 0, "pos": 1}
    assert summary["num_classes"] == 2
    assert summary["eps"] == 1.0
    assert summary["sequence_norm_median"] > 0
    assert set(summary["loss_terms"]) == {"ce", "vat", "at"}
    assert all(math.isfinite(v) for v in summary["loss_terms"].values())
    assert summary["loss_terms"]["vat"] > 0  # the VAT term was computed on a random, non-constant model
    assert math.isfinite(summary["train_loss"])
    assert summary["n_test"] == 6
    assert isinstance(summary["test_accuracy"], float)
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["saved"] is True

    before = BertForSequenceClassification.from_pretrained(model_dir, local_files_only=True)
    after = BertForSequenceClassification.from_pretrained(out, local_files_only=True)
    assert after.config.id2label == {0: "neg", 1: "pos"}
    assert after.config.label2id == {"neg": 0, "pos": 1}
    for name in ("bert.embeddings.word_embeddings.weight", "classifier.weight"):
        w0, w1 = before.state_dict()[name], after.state_dict()[name]
        assert w0.shape == w1.shape
        assert not torch.allclose(w0, w1), f"{name} did not change in training"
    saved_tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert saved_tokenizer.convert_ids_to_tokens(saved_tokenizer("great film")["input_ids"]) == [
        "[CLS]",
        "great",
        "film",
        "[SEP]",
    ]


def test_integer_labels_and_auto_eps(script, model_dir, tmp_path, capsys):
    rows = [(sentence(i, POSITIVE), "1") for i in range(3)] + [(sentence(i, NEGATIVE), "0") for i in range(3)]
    rows += [(sentence(i, POSITIVE), "") for i in range(2)] + [(sentence(i, NEGATIVE), " -1 ") for i in range(2)]
    train = write_csv(tmp_path / "train.csv", [(label, text) for text, label in rows], header=("y", "sentence"))
    # fmt: off
    summary = script.main([
        "--model", str(model_dir), "--train-csv", str(train), "--text-column", "sentence", "--label-column", "y",
        "--method", "vat", "--eps", "auto", "--regularize", "unlabeled", "--max-steps", "2", "--batch-size", "10",
        "--output-dir", str(tmp_path / "out"), "--cpu",
    ])
    # fmt: on
    assert summary["label_mapping"] == {"0": 0, "1": 1}
    assert (summary["n_labeled"], summary["n_unlabeled"]) == (6, 4)
    assert summary["eps"] == pytest.approx(script.AUTO_EPS_SCALE * summary["sequence_norm_median"], rel=1e-5)
    assert set(summary["loss_terms"]) == {"ce", "vat"}
    assert all(math.isfinite(v) for v in summary["loss_terms"].values())
    assert summary["test_accuracy"] is None and summary["n_test"] == 0
    assert summary["saved"] is False
    assert not (tmp_path / "out" / "config.json").exists()
    assert 'label mapping: {"0": 0, "1": 1}' in capsys.readouterr().out


def test_label_mapping_orders_integers_numerically(script):
    assert script.build_label_mapping(["10", "2", "", "-1", "2"]) == {"2": 0, "10": 1}
    assert script.build_label_mapping(["pos", "neg", "-1"]) == {"neg": 0, "pos": 1}
    assert script.build_label_mapping(["", "-1"]) == {}


def run_error(script, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        script.main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_missing_column_lists_the_columns_found(script, tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", [("good film", "pos"), ("bad film", "neg")], header=("review", "label"))
    err = run_error(script, ["--model", str(tmp_path), "--train-csv", str(train)], capsys)
    assert "--text-column" in err
    assert "'text'" in err
    assert "columns found: ['review', 'label']" in err


def test_missing_label_column(script, tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", [("good film", "pos")], header=("text", "sentiment"))
    err = run_error(script, ["--model", str(tmp_path), "--train-csv", str(train), "--label-column", "y"], capsys)
    assert "--label-column" in err and "'y'" in err and "columns found: ['text', 'sentiment']" in err


def test_no_labeled_rows(script, tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", [("good film", ""), ("bad film", "-1"), ("a film", " ")])
    err = run_error(script, ["--model", str(tmp_path), "--train-csv", str(train)], capsys)
    assert "expected labeled rows" in err
    assert "got none" in err and "all 3 labels" in err


def test_fewer_than_two_classes(script, tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", [("good film", "pos"), ("great film", "pos"), ("a film", "")])
    err = run_error(script, ["--model", str(tmp_path), "--train-csv", str(train)], capsys)
    assert "at least 2 classes" in err and "got 1: ['pos']" in err


def test_missing_file(script, tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    err = run_error(script, ["--model", str(tmp_path), "--train-csv", str(missing)], capsys)
    assert "--train-csv" in err and str(missing) in err and "not found" in err


def test_unknown_test_label(script, tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", [("good film", "pos"), ("bad film", "neg")])
    test = write_csv(tmp_path / "test.csv", [("good film", "pos"), ("a film", "meh")])
    err = run_error(script, ["--model", str(tmp_path), "--train-csv", str(train), "--test-csv", str(test)], capsys)
    assert "--test-csv" in err and "['neg', 'pos']" in err and "'meh'" in err and "data row 2" in err


def test_missing_model_directory(script, data, tmp_path, capsys):
    train, _ = data
    missing = tmp_path / "no-model"
    err = run_error(script, ["--model", str(missing), "--train-csv", str(train), "--cpu"], capsys)
    assert "--model" in err and str(missing) in err


def test_bad_eps(script, data, tmp_path, capsys):
    train, _ = data
    err = run_error(script, ["--model", str(tmp_path), "--train-csv", str(train), "--eps", "-1"], capsys)
    assert "--eps" in err and "'-1'" in err


def test_a_text_longer_than_the_position_embeddings_is_truncated_to_them(script, model_dir, data, tmp_path, capsys):
    train, _ = data
    long_text = " ".join(["good"] * 80)  # 82 tokens with [CLS] and [SEP]; the model has 64 positions
    rows = [*list(csv.reader(train.read_text(encoding="utf-8").splitlines()))[1:], [long_text, "pos"]]
    long_train = write_csv(tmp_path / "long.csv", [tuple(r) for r in rows])
    assert AutoTokenizer.from_pretrained(model_dir, local_files_only=True).model_max_length > 128  # no limit saved
    # fmt: off
    summary = script.main([
        "--model", str(model_dir), "--train-csv", str(long_train), "--max-steps", "1", "--batch-size", "17",
        "--output-dir", str(tmp_path / "out"), "--cpu",
    ])
    # fmt: on
    assert "--max-length 128 capped at 64 tokens (the model's position embeddings)" in capsys.readouterr().out
    assert math.isfinite(summary["train_loss"])


def test_position_limit_leaves_room_for_roberta_style_position_ids(script):
    from transformers import GPT2Config, GPT2ForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

    common = {"vocab_size": 50, "num_hidden_layers": 1, "num_labels": 2}
    bert = BertForSequenceClassification(
        BertConfig(**common, hidden_size=8, num_attention_heads=2, intermediate_size=16, max_position_embeddings=40)
    )
    assert script.position_limit(bert) == 40
    roberta = RobertaForSequenceClassification(
        RobertaConfig(
            **common, hidden_size=8, num_attention_heads=2, intermediate_size=16, max_position_embeddings=40,
            pad_token_id=1,
        )
    )  # fmt: skip
    assert script.position_limit(roberta) == 38  # position ids run from padding_idx + 1 = 2 to 39
    gpt2 = GPT2ForSequenceClassification(GPT2Config(vocab_size=50, n_embd=8, n_layer=1, n_head=2, n_positions=24))
    assert script.position_limit(gpt2) == 24
