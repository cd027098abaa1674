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


# PGD, the multi-step methods through the CLI, AutoAttack


@pytest.fixture(scope="module")
def pgd_run(tmp_path_factory):
    """A moons run trained through the CLI with pgd-at and its search flags."""
    out = tmp_path_factory.mktemp("pgd") / "moons"
    args = ["train", "--dataset", "moons", "--labels", "16", "--data-option", "n_samples=200", "--eps", "0.3"]
    args += ["--method", "pgd-at", "--steps", "3", "--clean-weight", "0.5", "--clamp", "-3", "3", "--keep", "last"]
    args += ["--iters", "20", "--eval-every", "20", "--lr", "0.01", "--batch-size", "8"]
    args += ["--out", str(out), "--no-progress", "--threads", "1"]
    assert main(args) == 0
    return out


def test_cli_trains_pgd_at_and_trades_with_their_search_flags(pgd_run, tmp_path):
    import json
    import tomllib

    from torchvat.runs import load_run

    assert json.loads((pgd_run / "run.json").read_text())["method"] == "pgd-at"
    config = tomllib.loads((pgd_run / "config.toml").read_text())
    extra = config["train"]["extra"]
    assert (extra["steps"], extra["clean_weight"], extra["clamp"], extra["keep"]) == (3, 0.5, [-3.0, 3.0], "last")
    out = tmp_path / "trades"
    args = ["train", "--dataset", "moons", "--labels", "16", "--data-option", "n_samples=200", "--eps", "0.3"]
    args += ["--method", "trades", "--steps", "2", "--beta", "6", "--iters", "6", "--eval-every", "6"]
    args += ["--out", str(out), "--no-progress", "--threads", "1"]
    assert main(args) == 0
    _, _, info = load_run(out / "last.pt")
    assert info["method"] == "trades"


def test_evaluate_adds_pgd_columns_never_above_the_one_step_attacks(pgd_run, tmp_path):
    # without a random start PGD keeps its best iterate, the one-step perturbation among the
    # candidates; with two classes a larger loss is a larger wrong-class probability: PGD never
    # classifies more samples correctly than the one-step attack of its norm
    res = run_evaluate(
        pgd_run / "last.pt",
        tmp_path / "ev",
        eps=[0.0, 0.3, 1.0],
        max_examples=200,
        pgd_steps=5,
        pgd_restarts=0,
        quiet=True,
    )
    assert {"PGD (L2)", "PGD (L-inf)"} <= set(res.curves)
    assert res.curves["PGD (L2)"][0] == res.curves["PGD (L-inf)"][0] == res.accuracy
    for i in range(3):
        assert res.curves["PGD (L2)"][i] <= res.curves["L2 adversarial"][i]
        assert res.curves["PGD (L-inf)"][i] <= res.curves["FGSM (L-inf)"][i]
    assert res.curves["PGD (L2)"][2] < res.accuracy
    with res.paths["csv"].open(encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert header == ["eps", *ATTACKS] and "PGD (L-inf)" in header
    report = res.paths["report"].read_text(encoding="utf-8")
    assert "Threat model" in report and "PGD: 5 steps" in report and "start at x" in report
    assert "L-inf ball of radius eps / sqrt(d)" in report and "d = 2 entries" in report


def test_pgd_restarts_only_lower_the_accuracy(pgd_run):
    import torch

    from torchvat.cli.evaluate import pgd_correct
    from torchvat.runs import load_run

    model, data, _ = load_run(pgd_run / "last.pt")
    model.eval()
    x, y = data.x_test[:200], data.y_test[:200]
    one = pgd_correct(model, x, y, eps=0.5, norm="l2", steps=5, restarts=1, seed=0)
    three = pgd_correct(model, x, y, eps=0.5, norm="l2", steps=5, restarts=3, seed=0)
    assert torch.all(three <= one)  # the first restart is the same search; each further one can only fool more
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    assert torch.all(one <= clean)


def test_evaluate_pgd_flags_and_their_errors(pgd_run, tmp_path, capsys):
    out = tmp_path / "ev"
    args = ["evaluate", str(pgd_run), "--out", str(out), "--eps", "0.3", "--max-examples", "50"]
    code = main([*args, "--pgd-steps", "3", "--pgd-restarts", "2", "--clamp", "-3", "3"])
    assert code == 0
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "PGD: 3 steps" in report and "2 random start(s)" in report and "inputs clamped to [-3, 3]" in report
    assert main(["evaluate", str(pgd_run), "--pgd-restarts", "-1"]) == 2
    assert "--pgd-restarts must be >= 0, got -1" in capsys.readouterr().err
    assert main(["evaluate", str(pgd_run), "--clamp", "1", "0"]) == 2
    assert "--clamp must be two finite numbers LO < HI" in capsys.readouterr().err


def test_autoattack_names_the_extra_when_the_toolbox_is_missing(pgd_run, tmp_path, monkeypatch):
    import sys

    from torchvat._extras import MissingExtraError

    monkeypatch.setitem(sys.modules, "art", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'torchvat\[attacks\]'"):
        run_evaluate(pgd_run / "last.pt", tmp_path / "aa", autoattack=True, quiet=True)
    assert not (tmp_path / "aa").exists()


def test_autoattack_column_at_the_training_eps(pgd_run, tmp_path):
    """AutoAttack on a tiny model, few examples: wiring, the column at the training eps, the threat model."""
    res = run_evaluate(
        pgd_run / "last.pt", tmp_path / "aa", eps=[0.0, 0.3], max_examples=12, autoattack=True, quiet=True
    )
    with res.paths["csv"].open(encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0][-1] == "AutoAttack (L-inf)"
    assert rows[1][-1] == ""  # eps 0: not run
    aa = float(rows[2][-1])
    assert 0.0 <= aa <= res.accuracy
    report = res.paths["report"].read_text(encoding="utf-8")
    assert "AutoAttack (Adversarial Robustness Toolbox): L-inf ball of radius 0.2121" in report
