"""Run folders: a run is never overwritten by mistake, a resume keeps its data, a branch keeps its history."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
import torch

from torchvat.cli import main
from torchvat.cli.train import run_train
from torchvat.report import read_metrics
from torchvat.runs import RunConfig, UsageError, check_run_folder, run_files

FAST = ["--iters", "30", "--eval-every", "10", "--batch-size", "8", "--unlabeled-batch-size", "32", "--no-progress"]
MOONS = ["train", "--dataset", "moons", "--labels", "8", "--data-option", "n_samples=200", "--eps", "0.3"]


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_new_run_into_a_folder_holding_a_run_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*MOONS, "--out", str(out), *FAST]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    # a failing run (lr 1e30) that would have replaced the first one
    assert main([*MOONS, "--model", "mlp", "--lr", "1e30", "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"torchvat: error: --out {out} holds a run already (config.toml, run.json, metrics.jsonl")
    assert "continue it with --resume, replace it with --overwrite, or give another --out" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert _snapshot(out) == before  # not a byte changed, no probe file left
    assert main(["evaluate", str(out / "best.pt"), "--out", str(tmp_path / "ev")]) == 0


def test_overwrite_replaces_the_run_and_leaves_none_of_its_checkpoints(tmp_path):
    out = tmp_path / "run"
    assert main([*MOONS, "--out", str(out), *FAST]) == 0
    assert main(["evaluate", str(out), "--eps", "0,0.1"]) == 0
    assert (out / "best.pt").is_file() and (out / "last.prev.pt").is_file() and (out / "evaluate").is_dir()
    # the new run has no held-out data: it writes no best.pt, so the old one must not survive it
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    y[20:] = -1
    np.savez(tmp_path / "d.npz", X=x, y=y)
    args = ["train", "--data", str(tmp_path / "d.npz"), "--out", str(out), "--overwrite", *FAST]
    assert main(args) == 0
    assert not (out / "best.pt").exists() and not (out / "evaluate").exists()  # no stale evaluation
    for name in ("last.pt", "last.prev.pt"):  # both the new run's: 3 input features, not the moons' 2
        state = torch.load(out / name, weights_only=True)
        assert next(iter(state["model"].values())).shape[1] == 3
    assert tomllib.loads((out / "config.toml").read_text())["data"]["path"] == str(tmp_path / "d.npz")
    records = read_metrics(out / "metrics.jsonl")  # the new run's only: no test error
    assert [r["step"] for r in records] == [10, 20, 30] and not any("test_error" in r for r in records)
    assert not list(out.glob(".*.tmp"))


def test_overwrite_keeps_the_earlier_run_when_the_new_one_fails_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*MOONS, "--out", str(out), *FAST]) == 0
    before = _snapshot(out)
    assert main(["train", "--data", str(tmp_path / "missing.npz"), "--out", str(out), "--overwrite", *FAST]) == 2
    assert "data file not found" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_check_run_folder_lets_a_run_continue_its_own_folder(tmp_path):
    out = tmp_path / "run"
    assert run_files(out) == []
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    check_run_folder(out)  # other files do not make a run
    (out / "last.pt").write_bytes(b"")
    check_run_folder(out, resume=out / "last.pt")
    check_run_folder(out, overwrite=True)
    with pytest.raises(UsageError, match=r"holds a run already \(last\.pt\)"):
        check_run_folder(out)
    with pytest.raises(UsageError, match=r"holds another run \(last\.pt\) than the checkpoint .*--overwrite"):
        check_run_folder(out, resume=tmp_path / "other" / "last.pt")


def test_resume_into_another_folder_branches_with_the_history(tmp_path, capsys):
    a, b = tmp_path / "A", tmp_path / "B"
    assert main([*MOONS, "--out", str(a), *FAST, "--checkpoint-every", "10"]) == 0
    capsys.readouterr()
    # lr 0: the held-out error stays, so best.pt stays the copied one
    args = ["train", "--resume", str(a / "last.pt"), "--out", str(b), "--iters", "40", "--lr", "0", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"branched from {a / 'last.pt'}: its history up to iteration 30 is copied into {b}" in printed
    assert [r["step"] for r in read_metrics(b / "metrics.jsonl")] == [10, 20, 30, 40]
    best = torch.load(b / "best.pt", weights_only=True)
    assert best["step"] == torch.load(a / "best.pt", weights_only=True)["step"]
    report = (b / "report.md").read_text()
    assert f"| best (chosen on test: optimistic) | test | {best['step']} |" in report
    assert torch.load(b / "last.prev.pt", weights_only=True)["step"] == 30  # the copied checkpoint, rotated
    assert [r["step"] for r in read_metrics(a / "metrics.jsonl")] == [10, 20, 30]  # A is untouched
    # B resumes on its own from there
    assert main(["train", "--resume", "--out", str(b), "--iters", "50", "--no-progress"]) == 0
    assert [r["step"] for r in read_metrics(b / "metrics.jsonl")] == [10, 20, 30, 40, 50]


def test_resume_into_a_folder_holding_another_run_is_refused(tmp_path, capsys):
    a, b = tmp_path / "A", tmp_path / "B"
    assert main([*MOONS, "--out", str(a), *FAST]) == 0
    assert main([*MOONS, "--out", str(b), *FAST]) == 0
    before = _snapshot(b)
    capsys.readouterr()
    assert main(["train", "--resume", str(a / "last.pt"), "--out", str(b), "--iters", "40", "--no-progress"]) == 2
    assert f"--out {b} holds another run" in capsys.readouterr().err
    assert _snapshot(b) == before


def test_data_paths_are_stored_absolute_and_found_from_another_directory(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    y[30:] = -1
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    np.savez(work / "d.npz", X=x, y=y)
    monkeypatch.chdir(work)
    args = ["train", "--data", "d.npz", "--data-option", "val_fraction=0.3", "--data-root", "roots", "--out", "run"]
    assert main([*args, *FAST]) == 0
    info = json.loads((work / "run" / "run.json").read_text())
    assert info["data"]["path"] == str(work / "d.npz") and info["data"]["root"] == str(work / "roots")
    assert tomllib.loads((work / "run" / "config.toml").read_text())["data"]["path"] == str(work / "d.npz")
    monkeypatch.chdir(elsewhere)
    assert main(["evaluate", str(work / "run"), "--out", "ev"]) == 0
    assert main(["train", "--resume", "--out", str(work / "run"), "--iters", "40", "--no-progress"]) == 0
    # the same file typed relative to another directory is the same data
    code = main(["train", "--resume", "--out", str(work / "run"), "--data", "../work/d.npz", "--iters", "50"])
    assert code == 0


def test_a_csv_test_path_is_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = ["a,b,label"] + [f"{i / 10},{i % 3},{'' if i >= 12 else i % 2}" for i in range(40)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(["a,b,label"] + [f"{i},{i},{i % 2}" for i in range(6)]) + "\n")
    config = RunConfig.from_dict({"data": {"dataset": None, "path": "t.csv", "options": {"test_path": "test.csv"}}})
    absolute = config.data.with_absolute_paths()
    assert absolute.path == str(tmp_path / "t.csv") and absolute.options == {"test_path": str(tmp_path / "test.csv")}
    assert config.data.path == "t.csv"  # a copy


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--dataset", "circles"], "dataset (--dataset) is 'moons' there, 'circles' now"),
        (["--data-seed", "5"], "seed (--data-seed) is 0 there, 5 now"),
        (["--labels", "10"], "n_labels (--labels) is 8 there, 10 now"),
        (["--data-option", "n_samples=300"], "options (--data-option) is {'n_samples': 200} there, {'n_samples': 300}"),
        (["--preprocess", "standardize"], "preprocess (--preprocess) is 'none' there, 'standardize' now"),
    ],
)
def test_a_resume_with_other_data_settings_is_refused_naming_them(tmp_path, capsys, flags, named):
    out = tmp_path / "run"
    assert main([*MOONS, "--out", str(out), *FAST]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), *flags, "--iters", "40", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("torchvat: error: --resume continues a run on the data it was trained on, but the [data]")
    assert named in err and "Traceback" not in err
    assert _snapshot(out) == before


@pytest.mark.parametrize(("first", "then"), [("two-moons", "moons"), ("moons", "Two_Moons")])
def test_a_resume_may_name_the_dataset_by_an_alias(tmp_path, capsys, first, then):
    out = tmp_path / "run"
    args = ["train", "--dataset", first, "--labels", "8", "--data-option", "n_samples=200", "--eps", "0.3"]
    assert main([*args, "--out", str(out), *FAST]) == 0
    capsys.readouterr()
    resumed = ["train", "--resume", "--out", str(out), "--dataset", then, "--iters", "40", "--no-progress"]
    assert main(resumed) == 0, capsys.readouterr().err
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [10, 20, 30, 40]


def test_a_resume_may_say_where_the_files_are(tmp_path):
    out = tmp_path / "run"
    assert main([*MOONS, "--out", str(out), *FAST]) == 0
    args = ["train", "--resume", "--out", str(out), "--data-root", str(tmp_path), "--labels", "8", "--iters", "40"]
    assert main([*args, "--no-progress"]) == 0  # root and download do not change the data; the same labels either


def test_the_report_of_a_resumed_recipe_run_words_it_like_the_console_and_keeps_the_papers(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--recipe", "mnist-100", "--dataset", "digits", "--labels", "50", "--model", "mlp"]
    assert main([*args, "--out", str(out), *FAST]) == 0
    assert json.loads((out / "run.json").read_text())["recipe"] == "mnist-100"
    assert "Reported in the papers" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--iters", "35", "--no-progress"]) == 0
    assert "5 iterations (iterations 31-35) in" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "5 iterations (iterations 31-35) in " in report and "35 iterations in" not in report
    assert "Reported in the papers" in report
    assert json.loads((out / "run.json").read_text())["recipe"] == "mnist-100"


def test_run_train_records_the_recipe_and_the_start(tmp_path):
    cfg = RunConfig.from_dict(
        {
            "data": {"dataset": "moons", "n_labels": 4, "options": {"n_samples": 100}},
            "train": {"method": "supervised", "iterations": 10, "eval_every": 5},
        }
    )
    outcome = run_train(cfg, tmp_path / "r", quiet=True, recipe="moons")
    assert outcome.start_step == 0 and json.loads((tmp_path / "r" / "run.json").read_text())["recipe"] == "moons"
    assert "10 iterations in" in (tmp_path / "r" / "report.md").read_text()
