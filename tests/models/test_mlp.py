import numpy as np
import pytest
import torch
from torch import nn

from torchvat.models import MLP, MNIST_HIDDEN_SIZES


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_default_is_the_papers_mnist_network():
    model = MLP()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    dims = [(m.in_features, m.out_features) for m in linears]
    assert dims == [(784, 1200), (1200, 600), (600, 300), (300, 150), (150, 10)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert [m.num_features for m in bns] == [1200, 600, 300, 150]
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 4
    assert not any(isinstance(m, nn.LeakyReLU | nn.Dropout) for m in model.modules())
    assert model.top_bn is None
    assert MNIST_HIDDEN_SIZES == (1200, 600, 300, 150)


def test_parameter_count_matches_arithmetic():
    # Hidden linears carry no bias (BN supplies the shift); BN has weight + bias.
    weights = 784 * 1200 + 1200 * 600 + 600 * 300 + 300 * 150
    bn = 2 * (1200 + 600 + 300 + 150)
    head = 150 * 10 + 10
    assert n_params(MLP()) == weights + bn + head


@pytest.mark.parametrize(
    ("shape", "in_features"),
    [((1, 28, 28), 784), ((784,), 784), ((2,), 2), ((3, 4, 5), 60)],
)
def test_output_shape_any_input_rank(shape, in_features):
    torch.manual_seed(0)
    model = MLP(in_features, 7, hidden_sizes=(16, 8))
    x = torch.randn(3, *shape)
    assert model(x).shape == (3, 7)
    model.eval()
    assert model(x[:1]).shape == (1, 7)


def test_flattening_is_row_major():
    torch.manual_seed(0)
    model = MLP(784, 10, hidden_sizes=(32,)).eval()
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(model(x), model(x.reshape(2, 784)))


def test_leaky_relu_slope_is_point_one():
    model = MLP(10, 3, hidden_sizes=(8, 8), activation="leaky_relu")
    leaky = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(leaky) == 2
    assert all(m.negative_slope == 0.1 for m in leaky)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


def test_without_batch_norm_hidden_linears_have_bias():
    model = MLP(2, 3, hidden_sizes=(100, 100), batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Linear))
    assert n_params(model) == (2 * 100 + 100) + (100 * 100 + 100) + (100 * 3 + 3)


def test_top_bn_normalizes_logits_in_train_mode():
    torch.manual_seed(0)
    model = MLP(5, 4, hidden_sizes=(16,), top_bn=True)
    assert isinstance(model.top_bn, nn.BatchNorm1d)
    assert model.top_bn.num_features == 4
    out = model(torch.randn(32, 5) * 3 + 1)
    torch.testing.assert_close(out.mean(0), torch.zeros(4), atol=1e-5, rtol=0)


def test_dropout_active_in_train_only():
    torch.manual_seed(0)
    model = MLP(8, 3, hidden_sizes=(64, 64), dropout=0.5)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    x = torch.randn(4, 8)
    assert not torch.equal(model(x), model(x))
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_empty_hidden_sizes_is_linear_model():
    model = MLP(6, 2, hidden_sizes=())
    assert n_params(model) == 6 * 2 + 2
    assert model(torch.randn(3, 6)).shape == (3, 2)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"in_features": 0}, ValueError, "in_features"),
        ({"in_features": 2.0}, TypeError, "in_features"),
        ({"n_classes": 0}, ValueError, "n_classes"),
        ({"n_classes": True}, TypeError, "n_classes"),
        ({"hidden_sizes": (10, 0)}, ValueError, r"hidden_sizes\[1\]"),
        ({"hidden_sizes": 100}, TypeError, "hidden_sizes"),
        ({"activation": "tanh"}, ValueError, "activation.*'tanh'"),
        ({"dropout": 1.0}, ValueError, "dropout"),
        ({"dropout": -0.1}, ValueError, "dropout"),
        ({"batch_norm": 1}, TypeError, "batch_norm"),
        ({"top_bn": "yes"}, TypeError, "top_bn"),
    ],
)
def test_invalid_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        MLP(**kwargs)


def test_forward_rejects_wrong_input():
    model = MLP(4, 2, hidden_sizes=(8,))
    with pytest.raises(ValueError, match="expects 4 features per sample, got input of shape"):
        model(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"\[B, \.\.\.\]"):
        model(torch.randn(4))


def test_numpy_integer_arguments_become_ints():
    model = MLP(in_features=np.int64(4), n_classes=np.int64(3), hidden_sizes=(np.int64(8),))
    assert (type(model.in_features), type(model.n_classes), type(model.hidden_sizes[0])) == (int, int, int)
    assert model(torch.randn(2, 4)).shape == (2, 3)
    with pytest.raises(TypeError, match=r"in_features must be a positive integer, got np\.True_"):
        MLP(in_features=np.True_)
    with pytest.raises(ValueError, match=r"n_classes must be a positive integer, got 0"):
        MLP(n_classes=np.int64(0))
