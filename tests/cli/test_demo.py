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
    rows = list(csv.DictReader(res.paths["results"].open()))
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
