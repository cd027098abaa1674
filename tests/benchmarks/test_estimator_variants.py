"""``benchmarks/estimator_variants.py``'s ``norm`` variants build the engine's widths with that normalization."""

import pytest
import torch
from torch import nn

from torchvat.models import scaled_hidden_sizes

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
