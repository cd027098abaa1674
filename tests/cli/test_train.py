from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
import torch

from torchvat.cli import main
from torchvat.cli.train import list_recipes, run_train
from torchvat.report import DPI, read_metrics
from torchvat.runs import RunConfig, UsageError, dump_toml, load_run

FAST = ["--iters", "30", "--eval-every", "10", "--batch-size", "8", "--unlabeled-batch-size", "32", "--no-progress"]


def _moons(tmp_path, *extra):
    out = tmp_path / "run"
    args = ["train", "--dataset", "moons", "--labels", "8", "--data-option", "n_samples=200", "--out", str(out)]
    return out, args + FAST + list(extra)


def test_train_writes_run_folder(tmp_path, capsys, png_size):
    out, args = _moons(tmp_path, "--method", "vat", "--eps", "0.3")
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "eps = 0.3 (given)" in stdout and "report:" in stdout
    for name in ("config.toml", "run.json", "metrics.jsonl", "last.pt", "report.md", "curves.png"):
        assert (out / name).is_file(), name
    assert png_size(out / "curves.png") == (11 * DPI, round(4.2 * DPI))
    assert "![" in (out / "report.md").read_text() and "curves.png" in (out / "report.md").read_text()
    evals = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in evals] == [10, 20, 30]
    info = json.loads((out / "run.json").read_text())
    assert info["model"]["name"] == "small-mlp" and info["input_shape"] == [2] and info["n_classes"] == 2
    assert info["data"]["options"] == {"n_samples": 200}


def test_derived_eps_is_printed_and_written(tmp_path, capsys):
    out, args = _moons(tmp_path)
    assert main(args) == 0
    assert "derived from the data" in capsys.readouterr().out
    eps = tomllib.loads((out / "config.toml").read_text())["train"]["eps"]
    assert eps > 0 and eps == json.loads((out / "run.json").read_text())["eps"]


def test_config_toml_repeats_the_run_exactly(tmp_path):
    out, args = _moons(tmp_path, "--method", "at", "--lr", "0.01", "--model-option", "hidden_sizes=[16]")
    assert main(args) == 0
    again = tmp_path / "again"
    assert main(["train", "--config", str(out / "config.toml"), "--out", str(again), "--no-progress"]) == 0
    assert (out / "config.toml").read_text() == (again / "config.toml").read_text()
    a, b = read_metrics(out / "metrics.jsonl"), read_metrics(again / "metrics.jsonl")
    assert [r["test_error"] for r in a] == [r["test_error"] for r in b]
    cfg = RunConfig.from_toml(again / "config.toml")
    assert cfg.train.method == "at" and cfg.train.lr == 0.01 and cfg.model.kwargs == {"hidden_sizes": [16]}


def test_flags_override_config(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        dump_toml({"data": {"dataset": "circles", "n_labels": 6}, "train": {"method": "supervised", "lr": 0.5}})
    )
    out = tmp_path / "o"
    assert main(["train", "--config", str(cfg), "--lr", "0.02", "--out", str(out), *FAST]) == 0
    written = tomllib.loads((out / "config.toml").read_text())
    assert written["train"]["lr"] == 0.02 and written["train"]["method"] == "supervised"
    assert written["data"]["dataset"] == "circles" and written["data"]["n_labels"] == 6


def test_resume_continues_to_more_iterations(tmp_path):
    out, args = _moons(tmp_path, "--method", "vat", "--eps", "0.3")
    assert main(args) == 0
    assert main(["train", "--resume", "--out", str(out), "--iters", "50", "--no-progress"]) == 0
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
    assert steps == [10, 20, 30, 40, 50]
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 50


def test_resume_without_out_is_usage_error(capsys):
    assert main(["train", "--resume"]) == 2
    assert "--resume without a PATH needs --out" in capsys.readouterr().err


def test_user_npz_and_csv(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    y[10:] = -1
    np.savez(tmp_path / "d.npz", X=x, y=y, X_test=x[:20], y_test=(x[:20, 0] > 0).astype(np.int64))
    out = tmp_path / "npz"
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--labels", "6", "--out", str(out), *FAST]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["input_shape"] == [3] and info["data"]["path"].endswith("d.npz")
    lines = ["a,b,label"] + [f"{a:.3f},{b:.3f},{'' if i >= 10 else int(a > 0)}" for i, (a, b, _) in enumerate(x)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    assert main(["train", "--data", str(tmp_path / "d.csv"), "--out", str(tmp_path / "csv"), *FAST]) == 0


def test_list_recipes(capsys):
    assert main(["train", "--list-recipes"]) == 0
    out = capsys.readouterr().out
    assert "mnist-100" in out and "1.36%" in out and "cifar10-4000" in out
    assert list_recipes().splitlines()[0].startswith("recipe")


def test_recipe_with_overrides(tmp_path):
    out = tmp_path / "rec"
    assert main(["train", "--recipe", "circles", "--out", str(out), *FAST]) == 0
    written = tomllib.loads((out / "config.toml").read_text())
    assert written["data"]["dataset"] == "circles" and written["train"]["eps"] == 0.3
    assert written["train"]["iterations"] == 30


def test_unknown_recipe(capsys):
    assert main(["train", "--recipe", "imagenet-1"]) == 2
    assert "recipe must be one of" in capsys.readouterr().err


def test_recipe_needing_download_says_how(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCHVAT_DATA", str(tmp_path / "empty"))
    code = main(
        ["train", "--recipe", "cifar10-4000", "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "c")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "to get the data" in err and "--download" in err


def test_run_train_direct_and_load_run(tmp_path):
    cfg = RunConfig.from_dict(
        {
            "data": {"dataset": "moons", "n_labels": 4, "options": {"n_samples": 100}},
            "train": {"method": "supervised", "iterations": 10, "eval_every": 5, "device": "cpu"},
        }
    )
    outcome = run_train(cfg, tmp_path / "d", quiet=True)
    assert outcome.result.steps == 10 and (tmp_path / "d" / "report.md").is_file()
    model, data, info = load_run(tmp_path / "d")
    expected = outcome.trainer.model.state_dict()
    assert all(torch.equal(v, expected[k].cpu()) for k, v in model.state_dict().items())
    assert data.n_labeled == 4 and info["step"] == 10


def test_invalid_config_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[train]\nfoo = 1\n")
    with pytest.raises(UsageError, match="unknown TrainConfig field"):
        RunConfig.from_toml(cfg)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], None),
        (["--compile"], True),
        (["--compile", "reduce-overhead"], "reduce-overhead"),
        (["--no-compile"], False),
    ],
)
def test_compile_flag_takes_an_optional_mode(flags, expected):
    from torchvat.cli.main import build_parser
    from torchvat.cli.train import _train_overrides

    args = build_parser().parse_args(["train", "--dataset", "moons", *flags])
    assert _train_overrides(args).get("compile") == expected


def test_compile_flag_rejects_an_unknown_mode(capsys):
    assert main(["train", "--dataset", "moons", "--compile", "fastest"]) == 2
    assert "invalid choice: 'fastest'" in capsys.readouterr().err


def test_a_refused_resume_leaves_the_run_folder_as_it_was(tmp_path, capsys):
    out, args = _moons(tmp_path, "--method", "vat", "--eps", "0.3")
    assert main(args) == 0
    config = (out / "config.toml").read_text()
    run = (out / "run.json").read_text()
    args = ["train", "--resume", "--out", str(out), "--iters", "40", "--optimizer", "sgd", "--no-progress"]
    assert main(args) == 2
    assert "optimizer='adam', but this trainer has optimizer='sgd'" in capsys.readouterr().err
    assert (out / "config.toml").read_text() == config and (out / "run.json").read_text() == run
    # and the run still resumes with its own settings
    assert main(["train", "--resume", "--out", str(out), "--iters", "40", "--no-progress"]) == 0


def test_resume_with_a_new_learning_rate_uses_and_records_it(tmp_path):
    out, args = _moons(tmp_path, "--method", "vat", "--eps", "0.3", "--schedule", "constant")
    assert main(args) == 0
    assert main(["train", "--resume", "--out", str(out), "--iters", "40", "--lr", "0.05", "--no-progress"]) == 0
    assert tomllib.loads((out / "config.toml").read_text())["train"]["lr"] == 0.05
    state = torch.load(out / "last.pt", weights_only=True)
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [0.05]


def test_no_progress_flag_turns_the_bar_off(tmp_path, monkeypatch):
    import sys

    from torchvat.train.callbacks import ProgressBar

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    seen = []
    original = ProgressBar.on_train_begin

    def spy(self, **kwargs):
        seen.append(kwargs["trainer"].config.progress)
        original(self, **kwargs)

    monkeypatch.setattr(ProgressBar, "on_train_begin", spy)
    _, args = _moons(tmp_path)  # FAST holds --no-progress
    assert main(args) == 0
    assert seen == [False]


def test_the_summary_says_on_which_split_the_best_record_was_chosen(tmp_path, capsys):
    _, args = _moons(tmp_path)
    assert main(args) == 0
    assert "best (chosen on test: optimistic)" in capsys.readouterr().out
    out = tmp_path / "digits"
    args = ["train", "--dataset", "digits", "--labels", "50", "--data-option", "n_val=50", "--out", str(out), *FAST]
    assert main(args) == 0
    assert "best (chosen on val)" in capsys.readouterr().out
    assert main([*args[: -len(FAST)], "--data-option", "n_vall=50", *FAST]) == 2
    assert "dataset 'digits' takes the options [" in capsys.readouterr().err


def test_a_run_that_fails_before_training_leaves_no_empty_folder(tmp_path):
    out = tmp_path / "never"
    args = ["train", "--dataset", "moons", "--model-option", "no_such_option=1", "--out", str(out), *FAST]
    assert main(args) == 2
    assert not out.exists()


def test_mostly_labeled_own_data_trains_and_says_how_to_evaluate(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    y[90:] = -1  # three quarters labeled: the derived eps once was 0 (an error)
    np.savez(tmp_path / "m.npz", X=x, y=y)
    out = tmp_path / "m"
    assert main(["train", "--data", str(tmp_path / "m.npz"), "--method", "vat", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "no held-out data: nothing evaluated. To evaluate, hold out labeled rows with" in printed
    assert json.loads((out / "run.json").read_text())["eps"] > 0
    assert "No held-out data" in (out / "report.md").read_text()


def test_skipped_iterations_are_counted_in_the_summary(tmp_path, capsys):
    _, args = _moons(tmp_path, "--lr", "1e38", "--nonfinite", "skip")
    assert main(args) == 1  # the final metrics are not finite
    assert "iterations skipped for a non-finite loss or gradient" in capsys.readouterr().out


def test_resume_says_where_it_continues_and_a_finished_run_is_left_alone(tmp_path, capsys):
    out, args = _moons(tmp_path, "--method", "vat", "--eps", "0.3")
    assert main(args) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--iters", "40", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "resumed at iteration 30" in printed and "eps = 0.3 (in use at iteration 30)" in printed
    assert "10 iterations (iterations 31-40) in" in printed
    config = (out / "config.toml").read_text()
    # fewer iterations than the checkpoint's: a finished run, exit 0 and nothing touched
    assert main(["train", "--resume", "--out", str(out), "--iters", "20", "--no-progress"]) == 0
    assert "already finished at iteration 40 (--iters 20); nothing to train" in capsys.readouterr().out
    assert (out / "config.toml").read_text() == config


def test_extending_a_finished_run_says_what_the_schedule_does(tmp_path, capsys):
    """The paper schedule over 30 iterations decays over the last 10; 60 iterations start decaying at 40."""
    out, args = _moons(tmp_path, "--method", "vat", "--eps", "0.3", "--lr", "0.001")
    assert main(args) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--iters", "60", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert (
        "--iters 60 extends the run planned for 30 iterations: the learning rate goes from 0.0001 (iteration 30) "
        "to 0.001 (iteration 31), Adam's beta1 from 0.5 to 0.9; the 'paper' schedule is recomputed over 60 "
        "iterations (--extend recompute); --extend continue keeps the rate the run ended with instead"
    ) in printed
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["schedule"]["total"] == 60 and state["schedule"]["cap"] is None
    # the other reading: the rate never goes back up
    assert main(["train", "--resume", "--out", str(out), "--iters", "90", "--extend", "continue", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "--iters 90 extends the run planned for 60 iterations: the learning rate goes from 5e-05 (iteration 60)" in (
        printed
    )
    assert "to 5e-05 (iteration 61); --extend continue: the rate never goes back up" in printed
    assert torch.load(out / "last.pt", weights_only=True)["schedule"]["cap"][:2] == [60, pytest.approx(0.05)]
    # a recompute after a continue drops the cap: back to the full rate
    assert main(["train", "--resume", "--out", str(out), "--iters", "150", "--no-progress"]) == 0
    assert "extends the run planned for 90 iterations: the learning rate goes from " in capsys.readouterr().out
    assert torch.load(out / "last.pt", weights_only=True)["schedule"]["cap"] is None


def test_the_report_gives_the_unlabeled_rows_and_the_unlabeled_pool(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(178, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    y[30:] = -1
    np.savez(tmp_path / "d.npz", X=x, y=y)
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--out", str(out), *FAST]) == 0
    assert "30 labeled rows, 148 unlabeled rows (the unlabeled pool: 178 inputs, the labeled rows included)" in (
        (out / "report.md").read_text()
    )
