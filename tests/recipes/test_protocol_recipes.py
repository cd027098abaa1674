"""The protocol recipes of Oliver et al. 2018 and USB / TorchSSL (issue 18, section 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchvat.recipes import available_recipes, load_recipe
from torchvat.runs import RunConfig

USB = {
    "usb-cifar10-40": 76.42,
    "usb-cifar10-250": 42.58,
    "usb-cifar10-4000": 10.97,
    "usb-svhn-40": 77.0,
    "usb-svhn-250": 4.59,
    "usb-svhn-1000": 4.09,
}
DOC = (Path(__file__).resolve().parents[2] / "docs" / "recipes.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["oliver-cifar10-4000", "oliver-svhn-1000", *USB])
def test_protocol_recipe_loads_validates_and_is_documented(name):
    recipe = load_recipe(name)
    config = RunConfig.from_dict(recipe.config(), where=name)
    assert config.model.name == "wrn-28-2" and config.train.xi == 1e-6
    assert recipe.reference and recipe.notes and recipe.reported
    assert any(line.startswith("## ") and f"`{name}`" in line for line in DOC.splitlines())


def test_oliver_settings():
    # brain-research/realistic-ssl-evaluation lib/hparams.py, train_model.py, build_tfrecords.py
    cifar, svhn = load_recipe("oliver-cifar10-4000"), load_recipe("oliver-svhn-1000")
    assert cifar.reported == {"vat": 13.86} and svhn.reported == {"vat": 5.63}
    assert (cifar.train["eps"], svhn.train["eps"]) == (6.0, 1.0)
    for r in (cifar, svhn):
        t = r.train
        assert (t["alpha"], t["lr"], t["iterations"], t["warmup_iters"]) == (0.3, 0.003, 500000, 200000)
        assert (t["batch_size"], t["unlabeled_batch_size"], t["method"]) == (50, 50, "vat")
    assert cifar.data["augment"] == "translate-flip" and svhn.data["augment"] == "translate"
    assert cifar.data["options"] == {"n_val": 5000} and svhn.data["options"] == {"n_val": 7326}


@pytest.mark.parametrize("name", sorted(USB))
def test_usb_vat_is_vat_plus_entropy_minimization(name):
    # microsoft/Semi-supervised-learning semilearn/algorithms/vat/vat.py: ent_loss_ratio 0.06, vat_eps 6
    recipe = load_recipe(name)
    t = recipe.train
    assert t["method"] == "vat+ent" and t["beta"] == 0.06 and t["eps"] == 6.0
    assert t["iterations"] == 2**20 and t["warmup_iters"] == round(0.4 * 2**20)
    assert (t["optimizer"], t["lr"], t["weight_decay"], t["nesterov"]) == ("sgd", 0.03, 0.0005, True)
    assert recipe.reported == {"vat+ent": USB[name]}
    assert t["ema"] == 0.999 and "pending" not in recipe.notes  # USB's yaml ema_m: 0.999
    assert "entropy minimization" in recipe.description


def test_every_reported_figure_is_filed_under_a_method_the_recipe_can_run():
    for name in available_recipes():
        recipe = load_recipe(name)
        if recipe.reported:
            assert recipe.train["method"] in recipe.reported, name
            assert recipe.reference, name
