from __future__ import annotations

import csv

import pytest

from torchvat.cli import main
from torchvat.cli.demo import DEMO_METHODS, run_demo
from torchvat.report import DPI


def test_demo_small_writes_report(tmp_path, png_size):
    res = run_demo(tmp_path / "demo", iters=20, quiet=True)
    assert set(res.errors) == set(DEMO_METHODS)
    for name in ("report", "boundaries", "curves", "results"):
        assert res.paths[name].is_file()
    assert png_size(res.paths["boundaries"]) == (round(3 * 4.6 * DPI), round(4.8 * DPI))
    assert png_size(res.paths["curves"]) == (11 * DPI, round(4.2 * DPI))
    report = res.paths["report"].read_text()
    assert "boundaries.png" in report and "curves.png" in report and "| supervised |" in report
    rows = list(csv.DictReader(res.paths["results"].read_text().splitlines()))
    assert [r["method"] for r in rows] == list(DEMO_METHODS)
    assert all(0 <= float(r["test_error"]) <= 1 for r in rows)
    for method in DEMO_METHODS:
        assert (tmp_path / "demo" / method / "last.pt").is_file()
        assert (tmp_path / "demo" / method / "config.toml").is_file()


def test_demo_through_main_prints_table(tmp_path, capsys):
    assert main(["demo", "--iters", "10", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "test error (%)" in out and "virtual adversarial training" in out
    assert f"report: {tmp_path / 'd' / 'report.md'}" in out


@pytest.mark.slow
def test_full_demo_vat_wins(tmp_path):
    res = run_demo(tmp_path / "full", quiet=True)
    assert res.errors["vat"] < 0.05
    assert res.errors["vat"] < res.errors["supervised"] - 0.05
    assert res.errors["vat"] < res.errors["at"]
    assert res.seconds < 60


def test_bad_input_fails_before_any_folder_is_made(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--iters", "5", "--labels", "1"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("torchvat: error: balanced selection needs at least one label per class") and "Trace" not in err
    )
    assert not (tmp_path / "runs").exists()


def test_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert main(["demo", "--iters", "5", "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert err == f"torchvat: error: --out {tmp_path / 'f'} exists and is not a directory; give a new or empty folder\n"


def test_a_failed_demo_removes_the_folder_it_made(tmp_path, monkeypatch):
    import torchvat.cli.demo as demo

    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(demo, "train_run", fail)
    assert main(["demo", "--iters", "5", "--out", str(tmp_path / "d")]) == 1
    assert not (tmp_path / "d").exists()


def test_an_earlier_demo_is_kept_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["demo", "--iters", "5", "--out", str(out)]) == 0
    before = (out / "results.csv").read_bytes()
    capsys.readouterr()
    assert main(["demo", "--iters", "6", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"torchvat: error: --out {out} holds an earlier demo (report.md, results.csv, supervised/")
    assert "replace it with --overwrite" in err and (out / "results.csv").read_bytes() == before
    assert main(["demo", "--iters", "6", "--out", str(out), "--overwrite"]) == 0
    assert [r["iterations"] for r in csv.DictReader((out / "results.csv").read_text().splitlines())] == ["6", "6", "6"]
