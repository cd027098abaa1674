from __future__ import annotations

import pytest

from torchvat.recipes import available_recipes, load_recipe
from torchvat.runs import RunConfig

EXPECTED = {
    "moons",
    "circles",
    "digits-100",
    "mnist-100",
    "svhn-1000",
    "cifar10-4000",
    "fashion-mnist-100",
    "fashion-mnist-1000",
}


def test_all_recipes_shipped():
    assert EXPECTED <= set(available_recipes())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_is_a_valid_run_config(name):
    recipe = load_recipe(name)
    cfg = RunConfig.from_dict(recipe.config(), where=name)
    assert recipe.description and recipe.source
    assert cfg.train.method == "vat"


def test_paper_numbers():
    assert load_recipe("mnist-100").reported == {"vat": 1.36}
    svhn, cifar = load_recipe("svhn-1000"), load_recipe("cifar10-4000")
    assert svhn.reported == {"vat": 5.42, "vat+ent": 3.86} and svhn.train["eps"] == 3.5
    assert cifar.data["preprocess"] == "zca" and cifar.data["augment"] == "translate-flip"
    assert cifar.train["iterations"] == 200000 and cifar.train["batch_size"] == 32
    assert "14.87" in cifar.source and "5.77" in svhn.source
    # as the authors' code (takerum/vat_tf): full ZCA whitening, SVHN labels not balanced per class
    assert cifar.data["zca_eps"] == 0.0 and svhn.data["options"] == {"balanced": False}


def test_augmentation_pads_with_the_centre_of_the_input_space():
    import torch

    from torchvat.runs import DataSpec, build_augment

    x = torch.ones(2, 1, 6, 6)
    for preprocess, fill in (("none", 0.5), ("zca", 0.0), ("standardize", 0.0)):
        aug = build_augment(DataSpec(dataset="digits", augment="translate", preprocess=preprocess), seed=0)
        assert aug.padding_mode == "constant" and aug.fill == fill
        out = torch.cat([aug(x) for _ in range(8)])
        assert set(out.unique().tolist()) <= {1.0, fill} and (out == fill).any()


def test_unknown_recipe():
    with pytest.raises(ValueError, match="recipe must be one of"):
        load_recipe("nope")


def test_recipes_name_the_default_data_folder_the_code_uses(monkeypatch):
    from pathlib import Path

    from torchvat.data import default_data_root

    monkeypatch.delenv("TORCHVAT_DATA", raising=False)
    assert default_data_root() == Path("~/.cache/torchvat/data").expanduser()
    for name in ("mnist-100", "cifar10-4000", "svhn-1000"):  # the torchvision downloads
        download = load_recipe(name).download
        assert "--data-root, default $TORCHVAT_DATA, else ~/.cache/torchvat/data)" in download, name
    for name in available_recipes():
        assert "~/.cache/torchvat)" not in load_recipe(name).download, name
