import pytest
import torch
from torch import nn

from torchvat.models import ConvLarge, ConvSmall


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_bn_params(c_in: int, c_out: int, k: int) -> int:
    # bias-free convolution + BatchNorm2d (weight and bias)
    return c_in * c_out * k * k + 2 * c_out


def expected_params(in_channels: int, widths: tuple[int, ...], n_classes: int) -> int:
    w1, w2, w3, w4, w5 = widths
    total = conv_bn_params(in_channels, w1, 3) + 2 * conv_bn_params(w1, w1, 3)
    total += conv_bn_params(w1, w2, 3) + 2 * conv_bn_params(w2, w2, 3)
    total += conv_bn_params(w2, w3, 3) + conv_bn_params(w3, w4, 1) + conv_bn_params(w4, w5, 1)
    return total + w5 * n_classes + n_classes


def test_conv_large_parameter_count():
    n = n_params(ConvLarge(3, 10))
    assert n == expected_params(3, (128, 256, 512, 256, 128), 10)
    assert n == 3_121_802
    assert 3.0e6 < n < 3.2e6


def test_conv_small_parameter_count():
    n = n_params(ConvSmall(3, 10))
    assert n == expected_params(3, (96, 192, 192, 192, 192), 10)
    assert n == 1_408_234


def test_top_bn_adds_batch_norm_on_logits():
    model = ConvSmall(1, 4, top_bn=True)
    assert isinstance(model.top_bn, nn.BatchNorm1d)
    assert n_params(model) == expected_params(1, (96, 192, 192, 192, 192), 4) + 2 * 4


@pytest.mark.parametrize("cls", [ConvSmall, ConvLarge])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 12, 13)])
def test_output_shapes(cls, shape):
    torch.manual_seed(0)
    model = cls(in_channels=shape[0], n_classes=10)
    assert model(torch.randn(2, *shape)).shape == (2, 10)
    model.eval()
    assert model(torch.randn(1, *shape)).shape == (1, 10)


@pytest.mark.parametrize(
    ("cls", "channels"),
    [
        (ConvLarge, [128, 128, 128, 256, 256, 256, 512, 256, 128]),
        (ConvSmall, [96, 96, 96, 192, 192, 192, 192, 192, 192]),
    ],
)
def test_layer_sequence(cls, channels):
    model = cls(in_channels=3, n_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == channels
    assert [c.kernel_size[0] for c in convs] == [3] * 7 + [1, 1]
    # "same" padding except the 3x3 valid convolution after the second pool
    assert [c.padding[0] for c in convs] == [1] * 6 + [0, 0, 0]
    assert all(c.bias is None for c in convs)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [(2, 2), (2, 2)]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    assert any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())
    assert model.classifier.in_features == channels[-1]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [b.num_features for b in bns] == channels


@pytest.mark.parametrize("cls", [ConvSmall, ConvLarge])
def test_leaky_relu_slope_point_one_after_every_conv(cls):
    model = cls()
    leaky = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(leaky) == 9
    assert all(m.negative_slope == 0.1 for m in leaky)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


def test_leaky_relu_is_applied_in_forward():
    # The network's output changes if the slope changes, so the modules are used.
    torch.manual_seed(0)
    model = ConvSmall(1, 3, dropout=0.0).eval()
    x = torch.randn(2, 1, 12, 12)
    before = model(x)
    for m in model.modules():
        if isinstance(m, nn.LeakyReLU):
            m.negative_slope = 0.0
    assert not torch.allclose(before, model(x))


def test_dropout_argument_and_modes():
    torch.manual_seed(0)
    model = ConvSmall(1, 3, dropout=0.3)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    x = torch.randn(2, 1, 12, 12)
    assert not torch.equal(model(x), model(x))
    model.eval()
    torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"in_channels": 0}, ValueError, "in_channels"),
        ({"n_classes": -2}, ValueError, "n_classes"),
        ({"n_classes": 2.5}, TypeError, "n_classes"),
        ({"dropout": 1.5}, ValueError, "dropout"),
        ({"top_bn": None}, TypeError, "top_bn"),
    ],
)
def test_invalid_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ConvSmall(**kwargs)


def test_forward_rejects_wrong_input():
    model = ConvSmall(1, 2)
    with pytest.raises(ValueError, match="height and width >= 12"):
        model(torch.randn(2, 1, 11, 28))
    with pytest.raises(ValueError, match="expects 1 input channels"):
        model(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(torch.randn(2, 784))


def test_batchnorm_follows_the_authors_settings():
    from torch import nn

    from torchvat.models import ConvLarge, ConvSmall

    for model in (ConvLarge(top_bn=True), ConvSmall(top_bn=True)):
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
        assert norms and all(m.momentum == 0.01 and m.eps == 1e-6 for m in norms)
