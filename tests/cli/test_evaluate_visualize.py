from __future__ import annotations

import csv

import pytest

from torchvat.cli import main
from torchvat.cli.evaluate import ATTACKS, run_evaluate
from torchvat.cli.visualize import run_visualize
from torchvat.report import DPI


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ev") / "moons"
    args = [
        "train",
        "--dataset",
        "moons",
        "--labels",
        "8",
        "--data-option",
        "n_samples=200",
        "--eps",
        "0.3",
        "--iters",
        "40",
        "--eval-every",
        "20",
        "--lr",
        "0.01",
        "--batch-size",
        "8",
        "--out",
        str(out),
        "--no-progress",
        "--threads",
        "1",
    ]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vis") / "digits"
    args = [
        "train",
        "--dataset",
        "digits",
        "--labels",
        "50",
        "--data-option",
        "as_images=true",
        "--model",
        "mlp",
        "--method",
        "supervised",
        "--iters",
        "30",
        "--eval-every",
        "30",
        "--out",
        str(out),
        "--no-progress",
        "--threads",
        "1",
    ]
    assert main(args) == 0
    return out


def test_evaluate_direct(moons_run, png_size):
    res = run_evaluate(moons_run / "last.pt", eps=[0.0, 0.3, 1.0], max_examples=200, quiet=True)
    assert res.split == "test" and set(res.curves) == set(ATTACKS)
    for accs in res.curves.values():
        assert accs[0] == pytest.approx(res.accuracy)
    assert res.curves["L2 adversarial"][-1] <= res.curves["L2 adversarial"][0]
    assert png_size(res.paths["plot"]) == (7 * DPI, round(4.5 * DPI))
    rows = list(csv.DictReader(res.paths["csv"].read_text().splitlines()))
    assert [float(r["eps"]) for r in rows] == [0.0, 0.3, 1.0]
    again = run_evaluate(moons_run / "last.pt", eps=[1.0, 0.3], max_examples=200, quiet=True)
    # seeded, and the same directions at each size whatever the grid: the same numbers again
    for kind in ATTACKS:
        assert again.curves[kind] == res.curves[kind][:0:-1]


def test_linf_trained_runs_place_their_eps_on_the_l2_axis(tmp_path):
    from torchvat.cli._common import l2_size
    from torchvat.runs import load_run

    out = tmp_path / "linf"
    args = ["train", "--dataset", "moons", "--labels", "8", "--data-option", "n_samples=100", "--method", "at"]
    args += ["--norm", "linf", "--eps", "0.2", "--iters", "5", "--eval-every", "5", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    _, data, info = load_run(out)
    assert info["norm"] == "linf" and data.input_shape == (2,)
    assert l2_size(info["eps"], info["norm"], data.input_shape) == pytest.approx(0.2 * 2**0.5)
    res = run_evaluate(out, max_examples=50, quiet=True)
    assert max(res.eps) == pytest.approx(4 * 0.2 * 2**0.5, rel=1e-5)  # the default grid ends at 4x the training size


def test_evaluate_main_default_grid(moons_run, capsys):
    assert main(["evaluate", str(moons_run), "--max-examples", "100", "--out", str(moons_run / "ev2")]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "virtual adversarial" in out
    assert (moons_run / "ev2" / "report.md").is_file() and (moons_run / "ev2" / "robustness.png").is_file()


def test_evaluate_errors(tmp_path, moons_run, capsys):
    assert main(["evaluate", str(tmp_path / "missing.pt")]) == 2
    assert str(tmp_path / "missing.pt") in capsys.readouterr().err
    assert main(["evaluate", str(moons_run), "--eps", "-1"]) == 2
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "last.pt").write_bytes((moons_run / "last.pt").read_bytes())
    assert main(["evaluate", str(lonely / "last.pt")]) == 2
    assert "run.json not found" in capsys.readouterr().err


def test_visualize_digits_images(digits_run, png_size):
    res = run_visualize(digits_run, digits_run / "grid.png", n=4, eps=3.0, quiet=True)
    w, h = png_size(res.path)
    assert w == round(7.8 * DPI) and h == round((2.3 * 4 + 0.6) * DPI)
    assert res.n == 4 and 0 <= res.flipped <= 4


def test_visualize_main_vat_and_non_images(digits_run, moons_run, capsys):
    assert main(["visualize", str(digits_run), "--attack", "vat", "--n", "2"]) == 0
    assert (digits_run / "perturbations.png").is_file()
    assert main(["visualize", str(moons_run)]) == 2
    assert "needs image inputs" in capsys.readouterr().err


def test_visualize_shows_whitened_inputs_as_pixels(tmp_path, monkeypatch):
    import torchvat.cli.visualize as vis

    out = tmp_path / "zca"
    args = ["train", "--dataset", "digits", "--labels", "50", "--data-option", "as_images=true", "--preprocess"]
    args += ["zca", "--method", "supervised", "--iters", "5", "--eval-every", "5", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    shown = {}

    def capture(x, r, path, **kwargs):
        shown.update(x=x, r=r, title=kwargs["title"])
        return path

    monkeypatch.setattr(vis, "plot_perturbation_grid", capture)
    res = run_visualize(out, out=tmp_path / "grid.png", eps=1.0, quiet=True)
    assert "shown as pixels (inverse ZCA)" in shown["title"]
    assert float(shown["x"].min()) > -1e-3 and float(shown["x"].max()) < 1 + 1e-3  # digits pixels lie in [0, 1]
    assert res.eps == 1.0 and shown["r"].shape == shown["x"].shape


def test_evaluate_out_must_be_a_folder(moons_run, tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert main(["evaluate", str(moons_run), "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"torchvat: error: --out {tmp_path / 'f'} exists and is not a directory; give a folder (new or existing)\n"
    )
