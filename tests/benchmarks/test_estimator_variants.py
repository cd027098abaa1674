"""``benchmarks/estimator_variants.py``'s ``norm`` variants build the engine's widths with that normalization."""

import numpy as np
import pytest
import torch
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from torch import nn

from torchvat.models import scaled_hidden_sizes
from torchvat.sklearn import VATClassifier

from ._bench import load

load("sklearn_bench")  # estimator_variants imports it by name, as when run from benchmarks/
variants = load("estimator_variants")


@pytest.mark.parametrize(("norm", "layer"), [("batch", nn.BatchNorm1d), ("layer", nn.LayerNorm), ("none", None)])
def test_vector_mlp_has_the_engine_widths_and_the_named_normalization(norm, layer):
    model = variants.vector_mlp(norm)(64, 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert tuple(m.out_features for m in linears[:-1]) == scaled_hidden_sizes(64) == (256, 128, 64)
    assert linears[-1].out_features == 10
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.LayerNorm)]
    if layer is None:
        assert norms == [] and all(m.bias is not None for m in linears)
    else:
        assert len(norms) == 3 and all(isinstance(m, layer) for m in norms)
        assert all(m.bias is None for m in linears[:-1])  # the normalization has its own shift
    assert model(torch.randn(5, 64)).shape == (5, 10)


def test_vector_mlp_refuses_an_unknown_norm():
    with pytest.raises(ValueError, match="norm must be 'batch', 'layer' or 'none', got 'group'"):
        variants.vector_mlp("group")


def test_kept_features_drops_the_columns_below_min_std():
    x = np.stack([np.zeros(6), np.r_[0, 0, 0, 0, 0, 0.5], np.arange(6.0)], axis=1)  # std 0, 0.19, 1.7
    assert variants.kept_features(x, None).tolist() == [True, True, True]
    assert variants.kept_features(x, 0.1).tolist() == [False, True, True]
    assert variants.kept_features(x, 1.0).tolist() == [False, False, True]


@pytest.mark.parametrize(("scaler", "first"), [("standard", StandardScaler), ("minmax", MinMaxScaler), ("none", None)])
def test_pipeline_puts_the_named_scaler_before_the_estimator(scaler, first):
    model = variants.pipeline(3, {"max_iter": 1}, True, scaler)
    assert isinstance(model[-1], VATClassifier) and model[-1].random_state == 3
    assert len(model) == (1 if first is None else 2)
    if first is not None:
        assert isinstance(model[0], first)


def test_pipeline_without_scaler_is_the_columns_own():
    assert isinstance(variants.pipeline(0, {}, True, None)[0], StandardScaler)
    assert len(variants.pipeline(0, {}, False, None)) == 1
    with pytest.raises(ValueError, match="scaler must be 'standard', 'minmax' or 'none', got 'robust'"):
        variants.pipeline(0, {}, True, "robust")


def test_far_unlabeled_rows_marks_only_unlabeled_rows_beyond_the_threshold():
    x = np.array([[0.0, 1.0], [6.0, 0.0], [0.0, -7.0], [8.0, 0.0], [4.9, 4.9]])
    y = np.array([-1, -1, -1, 2, -1])  # row 3 is far out but labeled: it stays
    assert variants.far_unlabeled_rows(x, y, 5.0).tolist() == [False, True, True, False, False]
    assert variants.far_unlabeled_rows(x, y, 6.5).tolist() == [False, False, True, False, False]
    assert not variants.far_unlabeled_rows(x, y, None).any()
    with pytest.raises(ValueError, match="drop_beyond must be a number > 0, got 0"):
        variants.far_unlabeled_rows(x, y, 0)
