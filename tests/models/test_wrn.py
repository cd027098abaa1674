import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchvat.models import WideBasicBlock, WideResNet, wrn28_2

# Oliver et al. 2018 / the WRN-28-2 literature report about 1.47M parameters.
KNOWN_WRN28_2_PARAMS = 1.47e6


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def expected_params(depth: int, k: int, in_channels: int, n_classes: int) -> int:
    n = (depth - 4) // 6
    widths = [16, 16 * k, 32 * k, 64 * k]
    total = in_channels * 16 * 9
    for g in range(3):
        c_in, c_out = widths[g], widths[g + 1]
        for i in range(n):
            c = c_in if i == 0 else c_out
            total += 2 * c + c * c_out * 9 + 2 * c_out + c_out * c_out * 9
            if c != c_out:
                total += c * c_out  # 1x1 shortcut
    return total + 2 * widths[3] + widths[3] * n_classes + n_classes


@pytest.fixture(scope="module")
def wrn():
    torch.manual_seed(0)
    return wrn28_2(n_classes=10)


def test_parameter_count_matches_known_figure(wrn):
    n = n_params(wrn)
    assert abs(n - KNOWN_WRN28_2_PARAMS) / KNOWN_WRN28_2_PARAMS < 0.02
    assert n == expected_params(28, 2, 3, 10) == 1_467_610


def test_structure(wrn):
    assert isinstance(wrn, WideResNet)
    blocks = [m for m in wrn.modules() if isinstance(m, WideBasicBlock)]
    assert len(blocks) == 12
    assert [b.conv2.out_channels for b in blocks] == [32] * 4 + [64] * 4 + [128] * 4
    assert [b.conv1.stride[0] for b in blocks] == [1] * 4 + [2] + [1] * 3 + [2] + [1] * 3
    assert [b.activate_before_residual for b in blocks] == [True] + [False] * 11
    shortcuts = [b.shortcut for b in blocks if isinstance(b.shortcut, nn.Conv2d)]
    assert [(s.in_channels, s.out_channels) for s in shortcuts] == [(16, 32), (32, 64), (64, 128)]
    assert wrn.conv1.out_channels == 16
    assert wrn.fc.in_features == 128


def test_batch_norm_momentum_is_0_001(wrn):
    bns = [m for m in wrn.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 2 * 12 + 1
    assert all(b.momentum == 0.001 for b in bns)


def test_batch_norm_momentum_governs_running_stats():
    torch.manual_seed(0)
    block = WideBasicBlock(4, 4)
    x = torch.randn(8, 4, 5, 5) + 3.0
    block(x)
    torch.testing.assert_close(block.bn1.running_mean, 0.001 * x.mean(dim=(0, 2, 3)))


def test_leaky_relu_slope_point_one(wrn):
    leaky = [m for m in wrn.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(leaky) == 2 * 12 + 1
    assert all(m.negative_slope == 0.1 for m in leaky)
    assert not any(isinstance(m, nn.ReLU) for m in wrn.modules())


def test_kaiming_initialization(wrn):
    gain = math.sqrt(2.0 / (1 + 0.1**2))
    conv = wrn.block3[1].conv2  # 128 x 128 x 3 x 3 weights
    expected_std = gain / math.sqrt(conv.out_channels * 9)  # fan-out
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.03)
    assert conv.weight.mean().abs().item() < 0.1 * expected_std
    for m in wrn.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    assert torch.equal(wrn.fc.bias, torch.zeros(10))


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])
def test_output_shapes(shape):
    torch.manual_seed(0)
    model = wrn28_2(n_classes=6, in_channels=shape[0])
    assert model(torch.randn(2, *shape)).shape == (2, 6)
    model.eval()
    assert model(torch.randn(1, *shape)).shape == (1, 6)


def test_block_forward_matches_definition():
    torch.manual_seed(0)

    def lrelu(t):
        return F.leaky_relu(t, 0.1)

    x = torch.randn(2, 4, 6, 6)
    for abr in (True, False):
        block = WideBasicBlock(4, 4, activate_before_residual=abr).eval()
        with torch.no_grad():
            for bn in (block.bn1, block.bn2):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
            pre = lrelu(block.bn1(x))
            out = block.conv2(lrelu(block.bn2(block.conv1(pre))))
            expected = out + (pre if abr else x)
            torch.testing.assert_close(block(x), expected)


def test_strided_block_uses_conv_shortcut():
    block = WideBasicBlock(16, 32, stride=2)
    assert isinstance(block.shortcut, nn.Conv2d)
    assert block.shortcut.stride == (2, 2)
    assert block(torch.randn(2, 16, 7, 7)).shape == (2, 32, 4, 4)


def test_other_depths_and_widths():
    model = WideResNet(depth=10, widen_factor=1, n_classes=3, in_channels=1)
    assert n_params(model) == expected_params(10, 1, 1, 3)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_kwargs_pass_through():
    model = wrn28_2(n_classes=4, bn_momentum=0.01, dropout=0.2)
    assert {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {0.01}
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 12


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"depth": 27}, ValueError, "depth must be 6n \\+ 4.*got 27"),
        ({"depth": 4}, ValueError, "depth"),
        ({"widen_factor": 0}, ValueError, "widen_factor"),
        ({"n_classes": 0}, ValueError, "n_classes"),
        ({"in_channels": "3"}, TypeError, "in_channels"),
        ({"bn_momentum": 0.0}, ValueError, "bn_momentum"),
        ({"dropout": 2}, ValueError, "dropout"),
    ],
)
def test_invalid_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        WideResNet(**kwargs)


def test_forward_rejects_wrong_channels():
    model = WideResNet(depth=10, widen_factor=1, in_channels=3)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.randn(2, 1, 8, 8))
