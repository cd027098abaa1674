"""Run folders under failure: an earlier run outlives every new run that fails before its first checkpoint.

Every failure path of ``train``, ``compare`` and ``demo`` is checked the same way: hash the folder
(every file and folder in it), fail with ``--overwrite``, hash again: equal. Restart scripts pass
``--resume`` every time: before the first checkpoint it starts the run, after the end it exits 0.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from torchvat.cli import main
from torchvat.cli.train import train_run
from torchvat.report import read_metrics

from ._helpers import assert_same_state

#: the globals of the train_run the commands run (not a copy a doctest collection may import)
RUN = train_run.__globals__

FAST = ["--iters", "30", "--eval-every", "10", "--batch-size", "8", "--unlabeled-batch-size", "32", "--no-progress"]
HELD_OUT = ["--data-option", "val_fraction=0.3"]


def _tree(folder: Path) -> dict[str, str]:
    """Every file (its SHA-256) and folder under ``folder``, by relative path."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A good ``.npz``, one whose labeled rows are of one class, and a file that is no data."""
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    y[30:] = -1
    np.savez(d / "good.npz", X=x, y=y)
    one = y.copy()
    one[one >= 0] = 1
    np.savez(d / "one.npz", X=x, y=one)
    (d / "bad.npz").write_bytes(b"not a numpy archive")
    return {"good": d / "good.npz", "one": d / "one.npz", "bad": d / "bad.npz"}


class _NaNModel(nn.Module):
    """A model whose every output is NaN: the first iteration's loss is not finite."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * float("nan")


def _nan_at_step_1(monkeypatch) -> None:
    build = RUN["build_run_model"]

    def build_nan(spec, input_shape, n_classes):
        model, name = build(spec, input_shape, n_classes)
        return _NaNModel(model), name

    monkeypatch.setitem(RUN, "build_run_model", build_nan)


FAILURES = ["bad data", "bad model options", "one class", "NaN at step 1", "no such device"]


def _failing_args(failure: str, files: dict[str, Path], monkeypatch) -> list[str]:
    if failure == "bad data":
        return ["--data", str(files["bad"]), *HELD_OUT]
    if failure == "bad model options":
        return ["--data", str(files["good"]), *HELD_OUT, "--model-option", "no_such_option=1"]
    if failure == "one class":
        return ["--data", str(files["one"]), *HELD_OUT]
    if failure == "no such device":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        return ["--data", str(files["good"]), *HELD_OUT, "--device", "cuda"]
    _nan_at_step_1(monkeypatch)
    return ["--data", str(files["good"]), *HELD_OUT]


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failed_train_overwrite_leaves_the_earlier_run_as_it_was(tmp_path, files, failure, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(files["good"]), *HELD_OUT, "--out", str(out), *FAST]) == 0
    assert main(["evaluate", str(out), "--eps", "0,0.1"]) == 0  # an evaluate/ folder too
    before = _tree(out)
    assert "best.pt" in before and "evaluate/report.md" in before
    capsys.readouterr()
    args = _failing_args(failure, files, monkeypatch)
    assert main(["train", *args, "--out", str(out), "--overwrite", *FAST]) != 0
    err = capsys.readouterr().err
    assert err.startswith("torchvat: error:") and err.count("\n") == 1
    assert _tree(out) == before


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failed_compare_overwrite_leaves_the_earlier_comparison_as_it_was(
    tmp_path, files, failure, monkeypatch, capsys
):
    out = tmp_path / "cmp"
    common = ["--methods", "supervised,vat", "--seeds", "0", "--eps", "0.3", *FAST]
    assert main(["compare", "--data", str(files["good"]), *HELD_OUT, "--out", str(out), *common]) == 0
    before = _tree(out)
    assert "vat-seed0/last.pt" in before and "report.md" in before
    capsys.readouterr()
    args = _failing_args(failure, files, monkeypatch)
    assert main(["compare", *args, "--out", str(out), "--overwrite", *common]) != 0
    assert capsys.readouterr().err.count("\n") == 1
    assert _tree(out) == before


def test_a_compare_failing_in_a_later_run_leaves_the_earlier_comparison_as_it_was(tmp_path, files, monkeypatch):
    out = tmp_path / "cmp"
    common = ["--data", str(files["good"]), *HELD_OUT, "--seeds", "0", "--eps", "0.3", *FAST]
    assert main(["compare", "--methods", "supervised,vat", "--out", str(out), *common]) == 0
    before = _tree(out)
    build = RUN["build_run_model"]
    calls = []

    def nan_in_the_second_run(spec, input_shape, n_classes):
        model, name = build(spec, input_shape, n_classes)
        calls.append(name)
        return (_NaNModel(model) if len(calls) == 2 else model), name

    monkeypatch.setitem(RUN, "build_run_model", nan_in_the_second_run)
    # the first run (supervised) trains to the end, with its checkpoints; the second fails at its first step
    assert main(["compare", "--methods", "supervised,vat", "--out", str(out), "--overwrite", *common]) == 1
    assert len(calls) == 2
    assert _tree(out) == before


DEMO_FAILURES = {
    "bad data": ["--labels", "5000"],
    "one class": ["--labels", "1"],
    "NaN at step 1": [],
    "no such device": ["--device", "cuda"],
}


@pytest.mark.parametrize("failure", DEMO_FAILURES)
def test_a_failed_demo_overwrite_leaves_the_earlier_demo_as_it_was(tmp_path, failure, monkeypatch, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--iters", "10"]) == 0
    before = _tree(out)
    assert "vat/last.pt" in before and "boundaries.png" in before
    capsys.readouterr()
    if failure == "NaN at step 1":
        _nan_at_step_1(monkeypatch)
    if failure == "no such device":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["demo", "--out", str(out), "--iters", "10", "--overwrite", *DEMO_FAILURES[failure]]) != 0
    assert capsys.readouterr().err.count("\n") == 1
    assert _tree(out) == before


def test_overwrite_swaps_the_new_run_in_at_its_first_checkpoint(tmp_path, files, monkeypatch, capsys):
    """A new run that fails after its first checkpoint has replaced the earlier one: its checkpoint is kept."""
    out = tmp_path / "run"
    assert main(["train", "--data", str(files["good"]), *HELD_OUT, "--out", str(out), *FAST]) == 0
    build = RUN["build_run_model"]

    class NaNAfter(nn.Module):  # finite for the first 12 training iterations' passes, then NaN
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += self.training
            y = self.inner(x)
            return y * float("nan") if self.calls > 12 else y

    monkeypatch.setitem(RUN, "build_run_model", lambda *a: (NaNAfter(build(*a)[0]), "small-mlp"))
    args = ["--data", str(files["good"]), "--out", str(out), "--overwrite", "--method", "supervised"]
    assert main(["train", *args, *FAST, "--checkpoint-every", "5"]) == 1
    assert "non-finite loss" in capsys.readouterr().err
    assert not (out / ".torchvat-staging").exists()
    # the new run's (no held-out data: no best.pt; the old one is gone, as are the old report and curves)
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 12  # the weights before the failed step
    assert torch.load(out / "last.prev.pt", weights_only=True)["step"] == 10  # the first checkpoint
    assert not (out / "best.pt").exists() and not (out / "report.md").exists()
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [10]


def test_a_folder_without_a_checkpoint_is_no_run_to_protect(tmp_path, files):
    """The files of a run that failed before its first checkpoint do not block the same command."""
    out = tmp_path / "run"
    args = ["train", "--data", str(files["good"]), *HELD_OUT, "--out", str(out), *FAST]
    out.mkdir()
    for name in ("config.toml", "run.json", "metrics.jsonl"):  # what such a run left before staging
        (out / name).write_text("left by a failed run\n")
    (out / ".torchvat-staging").mkdir()  # and what a run killed before its first checkpoint leaves
    (out / ".torchvat-staging" / "metrics.jsonl").write_text("{}\n")
    assert main(args) == 0
    assert (out / "last.pt").is_file() and not (out / ".torchvat-staging").exists()
    assert "[data]" in (out / "config.toml").read_text()


def test_a_failed_new_run_leaves_no_folder(tmp_path, files):
    out = tmp_path / "new"
    assert main(["train", "--data", str(files["one"]), *HELD_OUT, "--out", str(out), *FAST]) == 2
    assert not out.exists()


@pytest.mark.parametrize("killed", ["no folder", "staging left"])
def test_resume_before_the_first_checkpoint_starts_the_run_and_equals_an_uninterrupted_one(
    tmp_path, files, killed, capsys
):
    flags = ["--data", str(files["good"]), *HELD_OUT, "--method", "vat", "--eps", "0.3", *FAST]
    assert main(["train", *flags, "--out", str(tmp_path / "a")]) == 0
    b = tmp_path / "b"
    if killed == "staging left":
        (b / ".torchvat-staging").mkdir(parents=True)
        (b / ".torchvat-staging" / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    capsys.readouterr()
    assert main(["train", *flags, "--out", str(b), "--resume"]) == 0
    assert f"no checkpoint in {b} yet: the run starts from the beginning (--resume)" in capsys.readouterr().out
    for name in ("last.pt", "best.pt"):
        assert_same_state(
            torch.load(tmp_path / "a" / name, weights_only=True)["model"],
            torch.load(b / name, weights_only=True)["model"],
        )
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()


def test_resume_of_a_finished_run_exits_0_and_touches_nothing(tmp_path, files, capsys):
    out = tmp_path / "run"
    flags = ["train", "--data", str(files["good"]), *HELD_OUT, "--out", str(out), *FAST]
    assert main(flags) == 0
    before = _tree(out)
    capsys.readouterr()
    assert main([*flags, "--resume"]) == 0
    printed = capsys.readouterr()
    assert f"the run in {out} already finished at iteration 30 (--iters 30); nothing to train" in printed.out
    assert printed.err == ""
    assert _tree(out) == before


def test_a_branch_from_a_missing_checkpoint_is_still_refused(tmp_path, capsys):
    args = ["train", "--resume", str(tmp_path / "a" / "last.pt"), "--out", str(tmp_path / "b"), "--no-progress"]
    assert main(args) == 2
    assert "checkpoint to resume not found" in capsys.readouterr().err


@pytest.mark.parametrize(("device", "count", "named"), [("cuda", 0, "CUDA is not available"), ("cuda:3", 1, "has 1")])
def test_an_unavailable_device_is_a_usage_error_naming_the_devices(
    tmp_path, files, monkeypatch, capsys, device, count, named
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    out = tmp_path / "run"
    assert main(["train", "--data", str(files["good"]), "--out", str(out), "--device", device, *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err
    expected = "auto, cpu" + "".join(f", cuda:{i}" for i in range(count))
    assert err.rstrip().endswith(f"devices here: {expected}")
    assert not out.exists()


def test_one_labeled_class_is_refused_before_anything_is_written(tmp_path, files, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(files["one"]), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "training needs labeled rows of at least 2 classes, got 30 labeled row(s), all of class '1'" in err
    assert "bernoulli" not in err and not out.exists()
