"""The MNIST recipes hold the authors' stated settings (issue 18, items 1 and 2)."""

from __future__ import annotations

import torch

from torchvat.models import build_model
from torchvat.models.mlp import GaussianNoise
from torchvat.recipes import available_recipes, load_recipe
from torchvat.runs import RunConfig


def _build(name: str) -> torch.nn.Module:
    recipe = load_recipe(name)
    return build_model(recipe.model["name"], input_shape=(1, 28, 28), n_classes=10, **recipe.model.get("kwargs", {}))


def test_mnist_100_is_the_tpami_setting_the_first_author_stated():
    # takerum/vat issue #3: 784-1200-600-300-150-10, noise sd 0.5 on each hidden layer, eps = 5.0
    recipe = load_recipe("mnist-100")
    model = _build("mnist-100")
    widths = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [1200, 600, 300, 150, 10]
    assert [m.std for m in model.modules() if isinstance(m, GaussianNoise)] == [0.5] * 4
    assert recipe.train["eps"] == 5.0 and recipe.train["method"] == "vat"
    assert recipe.reported == {"vat": 1.36}
    assert "issue #3" in recipe.source


def test_mnist_100_iclr2016_is_the_authors_readme_command():
    # takerum/vat README and train_mnist_semisup.py defaults
    recipe = load_recipe("mnist-100-iclr2016")
    model = _build("mnist-100-iclr2016")
    widths = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [1200, 1200, 10]
    assert model.top_bn is not None  # batch normalization on the logits too (fnn_mnist_semisup.py)
    assert not any(isinstance(m, GaussianNoise) for m in model.modules())
    train = recipe.train
    assert (train["eps"], train["batch_size"], train["unlabeled_batch_size"], train["lr"]) == (0.3, 100, 250, 0.002)
    assert train["iterations"] == 100 * 500 and train["decay_beta1"] == 0.9
    assert recipe.data["n_labels"] == 100 and recipe.data["options"] == {"n_val": 1000}
    assert recipe.reported == {"vat": 2.0}


def test_every_recipe_is_a_valid_run_config_and_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "recipes.md").read_text(encoding="utf-8")
    for name in available_recipes():
        recipe = load_recipe(name)
        RunConfig.from_dict(recipe.config(), where=name)
        headings = [line for line in doc.splitlines() if line.startswith("## ")]
        assert any(f"`{name}`" in h for h in headings), name
