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
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {(r["method"], r["seed"]) for r in rows} == {
        ("supervised", "0"),
        ("supervised", "1"),
        ("vat", "0"),
        ("vat", "1"),
    }
    summary = {r["method"]: r for r in csv.DictReader((out / "summary.csv").open())}
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
