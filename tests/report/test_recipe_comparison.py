"""A recipe run's report and last console line put its own figure beside the recipe's (issue 18, section 4)."""

from __future__ import annotations

import numpy as np
import pytest

from torchvat.cli import main
from torchvat.data import write_idx
from torchvat.recipes import RecipeComparison, changed_settings, load_recipe

_STEMS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


@pytest.fixture
def mnist_root(tmp_path):
    """Small fake MNIST files where torchvision's ``MNIST(root, download=True)`` leaves them."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, size=(200, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(200) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(40) % 10).astype(np.uint8),
    }
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for key, stem in _STEMS.items():
        write_idx(raw / stem, arrays[key])
    return tmp_path / "data"


def _run(tmp_path, root, *extra):
    out = tmp_path / "run"
    args = ["train", "--recipe", "mnist-100", "--data-root", str(root), "--out", str(out)]
    args += ["--iters", "6", "--eval-every", "3", "--device", "cpu", "--no-progress", *extra]
    assert main(args) == 0
    return out


def test_a_shortened_recipe_run_names_both_figures_and_the_iterations(tmp_path, mnist_root, capsys):
    out = _run(tmp_path, mnist_root)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("recipe mnist-100: test error ")
    assert "% after 6 of 48,000 iterations (a shortened run; the recipe's reported figure: 1.36%" in last
    assert "Miyato et al., TPAMI 2018, Table 3" in last and "settings changed" not in last
    report = (out / "report.md").read_text()
    assert "**Not a reproduction**: test error " in report
    assert "after 6 of 48,000 iterations (a shortened run; the recipe's reported figure: 1.36%" in report
    # the run's own final figure in the row of its method, beside the paper's
    row = next(line for line in report.splitlines() if line.startswith("| vat | 1.36 |"))
    assert float(row.split("|")[3]) >= 0


def test_a_changed_setting_is_named(tmp_path, mnist_root, capsys):
    out = _run(tmp_path, mnist_root, "--eps", "2.0", "--labels", "20")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "settings changed from the recipe: n_labels 100 -> 20, eps 5.0 -> 2.0" in last
    assert "settings changed from the recipe: n_labels 100 -> 20, eps 5.0 -> 2.0" in (out / "report.md").read_text()


def test_where_and_how_a_run_is_shown_are_not_changes():
    from torchvat.runs import RunConfig

    recipe = RunConfig.from_dict(load_recipe("mnist-100").config())
    run = RunConfig.from_dict(
        {
            **load_recipe("mnist-100").config(),
            "data": {**load_recipe("mnist-100").data, "root": "/elsewhere", "download": True, "dataset": "MNIST"},
        }
    )
    run = run.__class__(data=run.data, model=run.model, train=run.train.replace(device="cpu", eval_every=7, seed=3))
    assert changed_settings(recipe, run) == []
    other = run.__class__(
        data=run.data, model=run.model.__class__(name="mnist-mlp", kwargs={"noise_std": 0.0}), train=run.train
    )
    assert changed_settings(recipe, other) == ["model option noise_std 0.5 -> 0.0"]


def test_the_sentence_of_a_full_run_a_longer_one_and_another_method():
    recipe = load_recipe("svhn-1000")
    full = RecipeComparison(recipe, "vat+ent", steps=48000, test_error=4.0)
    assert full.reproduces and full.sentence() == (
        "test error 4.00% after 48,000 of 48,000 iterations (the recipe's full length; the recipe's reported "
        "figure: 3.86%, Miyato et al., TPAMI 2018, Table 5 (with augmentation))"
    )
    longer = RecipeComparison(recipe, "vat", steps=50000, test_error=None)
    assert longer.sentence().startswith("no test error (no test split evaluated) after 50,000 iterations, more than")
    other = RecipeComparison(recipe, "supervised", steps=10, test_error=9.0, changes=["method vat -> supervised"])
    assert "the recipe reports no figure for method supervised; it reports vat 5.42%, vat+ent 3.86%" in other.sentence()
    assert not other.reproduces
    assert "the recipe has no reported figure" in RecipeComparison(load_recipe("moons"), "vat", 5, 1.0).sentence()
