from __future__ import annotations

import csv

from torchvat.cli import main
from torchvat.report import DPI


def test_compare_methods_and_seeds(tmp_path, capsys, png_size):
    out = tmp_path / "cmp"
    args = [
        "compare",
        "--dataset",
        "moons",
        "--labels",
        "8",
        "--data-option",
        "n_samples=150",
        "--eps",
        "0.3",
        "--iters",
        "15",
        "--eval-every",
        "15",
        "--batch-size",
        "8",
        "--unlabeled-batch-size",
        "32",
        "--methods",
        "supervised,vat",
        "--seeds",
        "0,1",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "±" in stdout and "supervised" in stdout and "vat" in stdout
    rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    assert {(r["method"], r["seed"]) for r in rows} == {
        ("supervised", "0"),
        ("supervised", "1"),
        ("vat", "0"),
        ("vat", "1"),
    }
    summary = {r["method"]: r for r in csv.DictReader((out / "summary.csv").read_text().splitlines())}
    errs = [float(r["test_error"]) for r in rows if r["method"] == "vat"]
    assert abs(float(summary["vat"]["mean_test_error"]) - sum(errs) / 2) < 1e-9
    w, h = png_size(out / "compare.png")
    assert h == round(4.2 * DPI) and w >= round(4.5 * DPI)
    report = (out / "report.md").read_text()
    assert "compare.png" in report
    shared = report.split("## Shared configuration", 1)[1]
    assert "method =" not in shared and "seed =" not in shared  # per run, not shared


def test_compare_rejects_unknown_method(tmp_path, capsys):
    assert main(["compare", "--methods", "vat,magic", "--iters", "5", "--out", str(tmp_path / "x")]) == 2
    assert "unknown method 'magic'" in capsys.readouterr().err
    assert main(["compare", "--seeds", "a,b"]) == 2


def test_compare_refuses_the_single_method_and_seed_options(tmp_path, capsys):
    for option, value in (("--method", "vat"), ("--seed", "3")):
        assert main(["compare", "--dataset", "moons", option, value, "--out", str(tmp_path)]) == 2
        assert f"use {option}s, not {option}" in capsys.readouterr().err


def test_compare_refuses_resume_before_looking_for_a_checkpoint(tmp_path, capsys):
    assert main(["compare", "--dataset", "moons", "--resume", "--out", str(tmp_path / "none")]) == 2
    assert "compare cannot --resume" in capsys.readouterr().err


FAST = ["--iters", "5", "--eval-every", "5", "--batch-size", "8", "--unlabeled-batch-size", "16", "--no-progress"]


def test_the_report_says_what_the_seed_drives(tmp_path):
    args = ["compare", "--dataset", "moons", "--data-option", "n_samples=100", "--methods", "supervised"]
    assert main([*args, "--seeds", "0,1", "--out", str(tmp_path / "a"), *FAST]) == 0
    assert "The seed selects the labels and drives the training." in (tmp_path / "a" / "report.md").read_text()
    assert main([*args, "--seeds", "0,1", "--data-seed", "3", "--out", str(tmp_path / "b"), *FAST]) == 0
    report = (tmp_path / "b" / "report.md").read_text()
    assert "The seed selects the labels" not in report
    assert (
        "Every run trains on the same data and labeled examples (--data-seed 3); the seed drives the training" in report
    )
    for seed in (0, 1):
        config = (tmp_path / "b" / f"supervised-seed{seed}" / "config.toml").read_text()
        assert f"seed = {seed}" in config and "seed = 3" in config


def test_bad_input_fails_before_any_folder_is_made(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--labels", "1", "--methods", "supervised", "--seeds", "0", *FAST]) == 2
    assert "balanced selection needs at least one label per class" in capsys.readouterr().err
    (tmp_path / "f").write_text("")
    assert main(["compare", "--methods", "supervised", "--seeds", "0", "--out", "f", *FAST]) == 2
    assert capsys.readouterr().err.startswith("torchvat: error: --out f exists and is not a directory")
    assert not (tmp_path / "runs").exists()


def test_data_without_a_held_out_split_is_refused_before_training(tmp_path, capsys):
    import numpy as np

    x = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    y[12:] = -1
    np.savez(tmp_path / "d.npz", X=x, y=y)
    out = tmp_path / "c"
    assert main(["compare", "--data", str(tmp_path / "d.npz"), "--seeds", "0", "--out", str(out), *FAST]) == 2
    assert "compare needs held-out data (a test or validation split), got none" in capsys.readouterr().err
    assert not out.exists()


def test_an_earlier_comparison_is_kept_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "c"
    args = [
        "compare",
        "--dataset",
        "moons",
        "--data-option",
        "n_samples=100",
        "--methods",
        "supervised",
        "--seeds",
        "0",
    ]
    assert main([*args, "--out", str(out), *FAST]) == 0
    capsys.readouterr()
    assert main([*args, "--out", str(out), *FAST]) == 2
    assert f"--out {out} holds an earlier comparison (report.md, results.csv, summary.csv" in capsys.readouterr().err
    assert main([*args, "--out", str(out), "--overwrite", *FAST]) == 0
