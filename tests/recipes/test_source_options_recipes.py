"""Recipes set what their sources do: BatchNorm re-estimation, the KL order, contrast normalization (issue 18)."""

from __future__ import annotations

import pytest

from torchvat.recipes import load_recipe
from torchvat.runs import RunConfig


def _train(name):
    return RunConfig.from_dict(load_recipe(name).config(), where=name).train


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("svhn-1000", ("labeled", 100, 100)),  # takerum/vat_tf test.py:18-19, 31-35, 74-76
        ("cifar10-4000", ("labeled", 100, 100)),
        ("mnist-100-iclr2016", ("unlabeled", 236, 250)),  # takerum/vat train_mnist_semisup.py:207-210
        ("oliver-cifar10-4000", (None, 100, 100)),  # the running averages, as rsse's code evaluates
    ],
)
def test_recipes_recalibrate_as_their_sources(name, expected):
    cfg = _train(name)
    assert (cfg.bn_recalibrate, cfg.bn_recalibrate_batches, cfg.bn_recalibrate_batch_size) == expected


@pytest.mark.parametrize("name", ["oliver-cifar10-4000", "oliver-svhn-1000"])
def test_oliver_recipes_use_the_perturbed_prediction_first(name):
    # brain-research/realistic-ssl-evaluation lib/ssl_framework.py:175-183, lib/ssl_utils.py:84-111
    assert _train(name).kl_direction == "perturbed-clean"
    assert _train("svhn-1000").kl_direction == "clean-perturbed"


def test_oliver_cifar10_contrast_normalizes_before_zca():
    # brain-research/realistic-ssl-evaluation build_tfrecords.py:165-173, lib/dataset_utils.py:409-483
    data = RunConfig.from_dict(load_recipe("oliver-cifar10-4000").config(), where="oliver-cifar10-4000").data
    assert (data.preprocess, data.gcn_scale, data.zca_eps) == ("gcn-zca", 55.0, 0.1)
