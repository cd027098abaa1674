r"""Semi-supervised text classification with VAT on a local Hugging Face model and CSV data.

Fine-tunes a sequence-classification model saved on disk (``save_pretrained``: config, weights and
tokenizer in one directory) with :class:`torchvat.integrations.hf.VATTrainer`: cross entropy on the
labeled rows plus virtual adversarial training (VAT) on the word embeddings of all rows (or of the
unlabeled rows only), and/or adversarial training (AT) on the labeled rows (Miyato et al. 2017).
Nothing is downloaded: every ``from_pretrained`` call passes ``local_files_only=True``.

Run it (from the repository root, with ``torchvat[hf]`` installed)::

    python examples/hf_text_classification.py --model path/to/local-model \
        --train-csv train.csv --test-csv test.csv --text-column text --label-column label \
        --method vat --eps 1.0 --alpha 1.0 --regularize all --max-steps 500 --batch-size 16 \
        --lr 2e-5 --max-length 128 --output-dir runs/hf-text --save

Data: ``--train-csv`` has a header row with a text column and a label column. A row whose label
is empty or ``-1`` is unlabeled: it gets the label ``-100`` and only the VAT term. Labels may be
strings (``pos``/``neg``) or integers; the sorted distinct labeled values are mapped to the class
indices ``0..K-1`` (numerically when all of them are integers) and the mapping is printed and stored
in the saved model's ``config.id2label``. ``--test-csv`` (optional, every row labeled with one of
the training classes) gives the accuracy at the end.

Choosing ``eps``: the perturbation has L2 norm ``eps`` over each whole embedded sequence (padding
is never perturbed), and the word embeddings of a pretrained transformer are not normalized (see
the module docstring of :mod:`torchvat.integrations.hf`), so ``eps`` only means something relative
to the norm of the embedded sequences, which grows with the sequence length and differs between
models. The script prints the median norm of the embedded training sequences; ``--eps auto`` uses
:func:`torchvat.suggest_eps` with ``rule="norm"`` (5% of that median), a starting point for a
small sweep (e.g. 0.5x, 1x, 2x, 4x it) on held-out labeled data.

AT (``--method at`` or ``at+vat``) uses the same ``eps`` and a fixed weight of 1.0 (``--alpha``
weights the VAT term only). Decoder-only models (GPT-2, Llama, ...) pool their last token, which
the VAT passes on the word embeddings find only with left padding: save the tokenizer with a pad
token and ``padding_side="left"`` (``VATTrainer`` raises a ``ValueError`` for right padding).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from torchvat import suggest_eps
from torchvat.integrations.hf import IGNORE_INDEX, VATArguments, word_embeddings

#: Label values (after stripping whitespace) that mark a training row as unlabeled.
UNLABELED_VALUES = frozenset({"", "-1"})
#: ``--eps auto``: this fraction of the median L2 norm of the embedded training sequences.
AUTO_EPS_SCALE = 0.05
#: At most this many training sequences are embedded to measure the typical sequence norm.
_NORM_SAMPLE = 256


@dataclass
class TextRows:
    """The texts and raw (stripped) label strings of one CSV file."""

    path: Path
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of the script."""
    p = argparse.ArgumentParser(
        description="Semi-supervised text classification with VAT on a local Hugging Face model and CSV data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = p.add_argument_group("model and data")
    data.add_argument(
        "--model",
        required=True,
        help="local directory holding a model and tokenizer saved with save_pretrained; a decoder-only model "
        "(GPT-2, Llama, ...) needs a tokenizer with a pad token and padding_side='left' saved in it",
    )
    data.add_argument("--train-csv", required=True, help="training CSV; rows with an empty or -1 label are unlabeled")
    data.add_argument("--test-csv", default=None, help="optional test CSV (every row labeled) for the final accuracy")
    data.add_argument("--text-column", default="text", help="name of the text column")
    data.add_argument("--label-column", default="label", help="name of the label column")
    vat = p.add_argument_group("regularization")
    vat.add_argument(
        "--method",
        choices=("vat", "at", "at+vat", "supervised", "vat+at"),
        default="vat",
        help="regularizer(s) to add (AT: fixed weight 1.0, size --eps); vat+at: deprecated name of at+vat",
    )
    vat.add_argument(
        "--eps",
        type=_eps_value,
        default=1.0,
        help="L2 perturbation size per embedded sequence, or 'auto' (5%% of the median sequence norm)",
    )
    vat.add_argument("--alpha", type=float, default=1.0, help="weight of the VAT term")
    vat.add_argument(
        "--regularize", choices=("all", "unlabeled"), default="all", help="rows the VAT term is applied to"
    )
    vat.add_argument("--vat-on", choices=("all", "unlabeled"), default=None, help="deprecated name of --regularize")
    train = p.add_argument_group("training")
    train.add_argument("--max-steps", type=int, default=500, help="number of optimizer steps")
    train.add_argument("--batch-size", type=int, default=16, help="rows per batch (labeled and unlabeled mixed)")
    train.add_argument("--lr", type=float, default=2e-5, help="AdamW learning rate")
    train.add_argument(
        "--max-length",
        type=int,
        default=128,
        help="sequences are truncated to this many tokens; capped at the tokenizer's model_max_length and at the "
        "model's max_position_embeddings (less padding_idx + 1 for RoBERTa-style position ids, which start there)",
    )
    train.add_argument("--output-dir", default="runs/hf-text", help="Trainer output directory (and --save target)")
    train.add_argument("--seed", type=int, default=0, help="random seed (classifier head init, shuffling, VAT)")
    train.add_argument("--cpu", action="store_true", help="train on the CPU even if an accelerator is available")
    train.add_argument("--save", action="store_true", help="save the fine-tuned model and tokenizer to --output-dir")
    return p


def _eps_value(text: str) -> float | str:
    """Parse ``--eps``: a positive number or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {text!r}")
    return value


def read_rows(parser: argparse.ArgumentParser, option: str, path: str, text_column: str, label_column: str) -> TextRows:
    """Read the text and label columns of a CSV file, exiting with a clear message on bad input.

    Args:
        parser: the parser whose ``error`` reports problems (exit status 2).
        option: the option that named the file (e.g. ``"--train-csv"``), quoted in messages.
        path: the CSV file (UTF-8, optionally with a byte-order mark, header row first).
        text_column: name of the text column.
        label_column: name of the label column.

    Returns:
        The texts and the stripped label strings, in file order.
    """
    file = Path(path)
    if not file.is_file():
        parser.error(f"{option}: expected an existing CSV file, got {path!r} (not found)")
    with file.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        if not columns:
            parser.error(f"{option}: expected a header row with column names, got an empty file {path!r}")
        for opt, name in (("--text-column", text_column), ("--label-column", label_column)):
            if name not in columns:
                parser.error(f"{opt}: expected a column of {option} {path!r}, got {name!r}; columns found: {columns}")
        rows = TextRows(file)
        for record in reader:
            rows.texts.append(record[text_column] or "")
            rows.labels.append((record[label_column] or "").strip())
    if not rows.texts:
        parser.error(f"{option}: expected at least one data row, got none in {path!r}")
    return rows


def build_label_mapping(labels: Sequence[str]) -> dict[str, int]:
    """Map the sorted distinct labeled values to ``0..K-1`` (numeric order when all are integers).

    Args:
        labels: stripped label strings; the unlabeled markers (``""``, ``"-1"``) are skipped.

    Returns:
        ``{label: class index}``, in class-index order.

    Example:
        >>> build_label_mapping(["pos", "", "neg", "-1", "pos"])
        {'neg': 0, 'pos': 1}
        >>> build_label_mapping(["10", "2", "-1", "02"])
        {'2': 0, '10': 1}
    """
    values = {v for v in labels if v not in UNLABELED_VALUES}
    try:
        numeric = {str(int(v)): int(v) for v in values}
    except ValueError:
        return {v: i for i, v in enumerate(sorted(values))}
    return {v: i for i, v in enumerate(sorted(numeric, key=numeric.__getitem__))}


def _canonical(label: str, mapping: dict[str, int]) -> str:
    """The key of ``label`` in ``mapping`` (integer labels are compared as integers: ``"02"`` is ``"2"``)."""
    if label in mapping:
        return label
    try:
        return str(int(label))
    except ValueError:
        return label


def encode(tokenizer: Any, texts: Sequence[str], labels: Sequence[int], max_length: int) -> list[dict[str, Any]]:
    """Tokenize ``texts`` (truncated to ``max_length`` tokens) into a list of examples with ``labels``.

    The examples hold lists of token ids (``DataCollatorWithPadding`` pads and tensorizes them per
    batch), so the list itself is the training dataset; no ``datasets`` package is needed.
    """
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    keys = list(enc.keys())
    return [{**{k: enc[k][i] for k in keys}, "labels": int(y)} for i, y in enumerate(labels)]


@torch.no_grad()
def embedded_sequences(model: Any, examples: Sequence[dict[str, Any]], collator: Any, seed: int) -> torch.Tensor:
    """Word embeddings of up to 256 training sequences (chosen at random), zero at padding.

    Returns:
        A float tensor [N, T, H] whose per-row L2 norm is the norm of the embedded sequence that VAT
        perturbs (``eps`` is measured on the same scale).
    """
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(examples), generator=g)[:_NORM_SAMPLE].tolist()
    batch = collator([{k: v for k, v in examples[i].items() if k != "labels"} for i in idx])
    device = next(model.parameters()).device
    emb = word_embeddings(model, batch["input_ids"].to(device)).float()
    mask = batch.get("attention_mask")
    if mask is not None:
        emb = emb * mask.to(device)[..., None].float()
    return emb.cpu()


def _load(parser: argparse.ArgumentParser, path: str, mapping: dict[str, int]) -> tuple[Any, Any]:
    """Load the tokenizer and a K-class sequence-classification model from a local directory."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not Path(path).is_dir():
        parser.error(f"--model: expected a local directory saved with save_pretrained, got {path!r} (not found)")
    id2label = {i: name for name, i in mapping.items()}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        # num_labels is len(id2label); passing both warns when the checkpoint's head has another size
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            id2label=id2label,
            label2id=dict(mapping),
            ignore_mismatched_sizes=True,  # a head saved for another number of classes is re-initialized
            local_files_only=True,
        )
    except (OSError, ValueError) as e:
        parser.error(f"--model: expected a tokenizer and model saved with save_pretrained in {path!r}, got: {e}")
    if model.config.num_labels != len(mapping):
        parser.error(f"--model: expected a head with {len(mapping)} classes, got {model.config.num_labels}")
    return tokenizer, model


def position_limit(model: Any) -> int | None:
    """The longest sequence the model's position embeddings take, or ``None`` if its config sets no limit.

    That is ``config.max_position_embeddings``, less ``padding_idx + 1`` for RoBERTa-style models
    (RoBERTa, XLM-RoBERTa, MPNet, ...), whose position ids start after the padding index: their
    embedding module (the parent of the word embeddings) has an integer ``padding_idx``, as does
    its ``position_embeddings`` table.
    """
    limit = getattr(model.config, "max_position_embeddings", None)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        return None
    layer = model.get_input_embeddings()
    parent = next((m for m in model.modules() if any(c is layer for c in m.children())), None)
    padding_idx = getattr(parent, "padding_idx", None)
    positions = getattr(parent, "position_embeddings", None)
    if isinstance(padding_idx, int) and getattr(positions, "padding_idx", None) is not None:
        limit -= padding_idx + 1
    return max(limit, 1)


def _loss_terms(trainer: Any) -> dict[str, float]:
    """The loss terms of the last training log (means since the log before), else of the last step."""
    for entry in reversed(trainer.state.log_history):
        terms = {k.removeprefix("loss_"): float(v) for k, v in entry.items() if k.startswith("loss_")}
        if terms:
            return terms
    return {k: float(v) for k, v in getattr(trainer, "last_loss_terms", {}).items()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the example: read the CSVs, fine-tune with VAT, report (and optionally save).

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The summary: ``n_train``, ``n_labeled``, ``n_unlabeled``, ``label_mapping``, ``num_classes``,
        ``eps``, ``sequence_norm_median``, ``train_loss``, ``loss_terms`` (``ce``, ``vat``, ``at`` as
        trained, each the mean over the batches since the last log), ``n_test`` and ``test_accuracy``
        (``None`` without ``--test-csv``), ``output_dir`` and ``saved``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("max_steps", "batch_size", "max_length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(args, name)}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"--lr: expected a positive number, got {args.lr}")
    if not (math.isfinite(args.alpha) and args.alpha >= 0):
        parser.error(f"--alpha: expected a non-negative number, got {args.alpha}")

    train_rows = read_rows(parser, "--train-csv", args.train_csv, args.text_column, args.label_column)
    test_rows = (
        read_rows(parser, "--test-csv", args.test_csv, args.text_column, args.label_column) if args.test_csv else None
    )
    mapping = build_label_mapping(train_rows.labels)
    if not mapping:
        parser.error(
            f"--label-column: expected labeled rows in --train-csv {args.train_csv!r}, got none "
            f"(all {len(train_rows.labels)} labels in column {args.label_column!r} are empty or -1)"
        )
    if len(mapping) < 2:
        parser.error(
            f"--label-column: expected at least 2 classes among the labeled rows of --train-csv "
            f"{args.train_csv!r}, got 1: {list(mapping)}"
        )
    train_y = [IGNORE_INDEX if v in UNLABELED_VALUES else mapping[_canonical(v, mapping)] for v in train_rows.labels]
    test_y: list[int] = []
    if test_rows is not None:
        for row, v in enumerate(test_rows.labels, start=1):
            key = _canonical(v, mapping)
            if key not in mapping:
                parser.error(
                    f"--test-csv: expected every label to be one of the training classes {list(mapping)}, "
                    f"got {v!r} in data row {row} of {args.test_csv!r}"
                )
            test_y.append(mapping[key])
    n_labeled = sum(y != IGNORE_INDEX for y in train_y)
    print(f"label mapping: {json.dumps(mapping)}")
    print(f"training rows: {len(train_y)} ({n_labeled} labeled, {len(train_y) - n_labeled} unlabeled)")

    from transformers import DataCollatorWithPadding, TrainingArguments, set_seed

    from torchvat.integrations.hf import VATTrainer

    set_seed(args.seed)
    tokenizer, model = _load(parser, args.model, mapping)
    max_length = args.max_length
    # a tokenizer saved without a limit has model_max_length 1e30: the model's position embeddings cap it too
    for source, limit in (
        ("the tokenizer's model_max_length", getattr(tokenizer, "model_max_length", None)),
        ("the model's position embeddings", position_limit(model)),
    ):
        if isinstance(limit, int) and 0 < limit < max_length:
            max_length = limit
            print(f"--max-length {args.max_length} capped at {limit} tokens ({source})")
    collator = DataCollatorWithPadding(tokenizer)
    train_set = encode(tokenizer, train_rows.texts, train_y, max_length)
    test_set = encode(tokenizer, test_rows.texts, test_y, max_length) if test_rows is not None else None

    embedded = embedded_sequences(model, train_set, collator, args.seed)
    median_norm = float(embedded.flatten(1).norm(dim=1).median())
    eps = suggest_eps(embedded, rule="norm", scale=AUTO_EPS_SCALE) if args.eps == "auto" else args.eps
    del embedded
    ratio = f" ({eps / median_norm:.1%} of it)" if median_norm > 0 else ""
    print(f"median L2 norm of an embedded training sequence: {median_norm:.4g}; eps = {eps:.4g}{ratio}")

    targs = TrainingArguments(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.lr,
        logging_steps=max(1, min(50, args.max_steps // 10)),
        save_strategy="no",
        report_to=[],
        use_cpu=args.cpu,
        seed=args.seed,
        disable_tqdm=not sys.stderr.isatty(),
    )
    renamed = {} if args.vat_on is None else {"vat_on": args.vat_on}  # deprecated: VATArguments warns
    vat_args = VATArguments(method=args.method, eps=float(eps), alpha=args.alpha, regularize=args.regularize, **renamed)
    trainer = VATTrainer(
        model=model,
        args=targs,
        train_dataset=train_set,
        data_collator=collator,
        vat_args=vat_args,
    )
    result = trainer.train()
    loss_terms = _loss_terms(trainer)

    accuracy = None
    if test_set is not None:
        pred = trainer.predict(test_set)
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        accuracy = float((torch.as_tensor(logits).argmax(-1) == torch.tensor(test_y)).float().mean())

    if args.save:
        trainer.save_model(args.output_dir)
        tokenizer.save_pretrained(args.output_dir)

    summary: dict[str, Any] = {
        "n_train": len(train_y),
        "n_labeled": n_labeled,
        "n_unlabeled": len(train_y) - n_labeled,
        "label_mapping": mapping,
        "num_classes": len(mapping),
        "method": args.method,
        "eps": float(eps),
        "sequence_norm_median": median_norm,
        "train_loss": float(result.training_loss),
        "loss_terms": loss_terms,
        "n_test": len(test_y) if test_rows is not None else 0,
        "test_accuracy": accuracy,
        "output_dir": os.fspath(args.output_dir),
        "saved": bool(args.save),
    }
    print("summary:")
    for key in ("n_labeled", "n_unlabeled", "label_mapping", "train_loss", "loss_terms", "test_accuracy"):
        print(f"  {key}: {json.dumps(summary[key])}")
    if args.save:
        print(f"  saved model and tokenizer to {args.output_dir}")
    return summary


if __name__ == "__main__":
    main()
