"""The conv-small and conv-large networks of the VAT paper."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from torchvat.models._checks import (
    check_bool,
    check_positive_int,
    check_probability,
    check_spatial_input,
)

__all__ = ["ConvLarge", "ConvSmall"]

_LEAKY_SLOPE = 0.1
# BatchNorm as in the authors' layers.py (github.com/takerum/vat_tf): running averages with decay
# 0.99 (PyTorch momentum 0.01) and 1e-6 added to the variance
_BN: dict[str, Any] = {"momentum": 0.01, "eps": 1e-6}
# Two 2x2 max-pools then a 3x3 "valid" convolution: H // 4 must be at least 3.
_MIN_SIZE = 12


def _conv_bn_act(in_channels: int, out_channels: int, kernel_size: int, padding: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels, **_BN),
        nn.LeakyReLU(_LEAKY_SLOPE),
    )


class _VATConvNet(nn.Module):
    """Shared body of conv-small and conv-large (widths ``w1``, ``w2``, ``w3``, ``w4``, ``w5``)."""

    _name = "conv net"

    def __init__(
        self,
        widths: tuple[int, int, int, int, int],
        in_channels: int,
        n_classes: int,
        dropout: float,
        top_bn: bool,
    ) -> None:
        super().__init__()
        in_channels = check_positive_int(in_channels, "in_channels")
        n_classes = check_positive_int(n_classes, "n_classes")
        dropout = check_probability(dropout, "dropout")
        check_bool(top_bn, "top_bn")
        self.in_channels = in_channels
        self.n_classes = n_classes

        w1, w2, w3, w4, w5 = widths
        self.features = nn.Sequential(
            _conv_bn_act(in_channels, w1, 3, 1),
            _conv_bn_act(w1, w1, 3, 1),
            _conv_bn_act(w1, w1, 3, 1),
            nn.MaxPool2d(2, 2),
            nn.Dropout(dropout),
            _conv_bn_act(w1, w2, 3, 1),
            _conv_bn_act(w2, w2, 3, 1),
            _conv_bn_act(w2, w2, 3, 1),
            nn.MaxPool2d(2, 2),
            nn.Dropout(dropout),
            _conv_bn_act(w2, w3, 3, 0),
            _conv_bn_act(w3, w4, 1, 0),
            _conv_bn_act(w4, w5, 1, 0),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
        )
        self.classifier = nn.Linear(w5, n_classes)
        self.top_bn = nn.BatchNorm1d(n_classes, **_BN) if top_bn else None

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=_LEAKY_SLOPE, nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits for an image batch ``x`` of shape ``[B, C, H, W]``.

        Args:
            x: Input images with ``C == in_channels`` and ``H, W >= 12``.

        Returns:
            Logits of shape ``[B, n_classes]``.

        Raises:
            ValueError: If ``x`` has the wrong rank, channel count or is smaller
                than 12x12.
        """
        check_spatial_input(x, self.in_channels, _MIN_SIZE, self._name)
        logits = self.classifier(self.features(x))
        if self.top_bn is not None:
            logits = self.top_bn(logits)
        return logits


class ConvLarge(_VATConvNet):
    """The conv-large network of the VAT paper (about 3.1M parameters for 10 classes).

    Miyato et al., "Virtual Adversarial Training: A Regularization Method for
    Supervised and Semi-Supervised Learning", TPAMI 2018, Table 4 (the CNN used
    on SVHN and CIFAR-10, after Laine & Aila's temporal-ensembling network).

    Architecture (every convolution is followed by ``BatchNorm2d`` and a leaky
    ReLU of slope 0.1; "same" padding unless stated; batch normalization with the
    authors' running-average momentum 0.01 and eps 1e-6)::

        3x3 conv 128 -> 3x3 conv 128 -> 3x3 conv 128
        2x2 max-pool, stride 2 -> dropout(p)
        3x3 conv 256 -> 3x3 conv 256 -> 3x3 conv 256
        2x2 max-pool, stride 2 -> dropout(p)
        3x3 conv 512 (valid) -> 1x1 conv 256 -> 1x1 conv 128
        global average pool -> Linear(128, n_classes) [-> BatchNorm1d if top_bn]

    Convolutions have no bias (batch normalization supplies the shift); they are
    initialized with Kaiming normal (leaky ReLU, slope 0.1), the linear layer with
    Xavier uniform. The input Gaussian noise layer some re-implementations add is
    not part of this network. Works on any ``H, W >= 12``, e.g. 28x28 MNIST
    (``in_channels=1``) and 32x32 RGB.

    Args:
        in_channels: Number of input channels (3 for RGB, 1 for MNIST).
        n_classes: Number of output logits.
        dropout: Dropout probability after each max-pool.
        top_bn: Whether the logits go through ``BatchNorm1d``.

    Shape:
        - Input: ``[B, in_channels, H, W]`` with ``H, W >= 12``.
        - Output: ``[B, n_classes]``.
        - In training mode the batch needs at least 2 samples (batch normalization).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has an invalid value.

    Example:
        >>> import torch
        >>> from torchvat.models import ConvLarge
        >>> model = ConvLarge(in_channels=3, n_classes=10)
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> ConvLarge(in_channels=1, n_classes=10)(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    _name = "ConvLarge"

    def __init__(
        self,
        in_channels: int = 3,
        n_classes: int = 10,
        *,
        dropout: float = 0.5,
        top_bn: bool = False,
    ) -> None:
        super().__init__((128, 256, 512, 256, 128), in_channels, n_classes, dropout, top_bn)


class ConvSmall(_VATConvNet):
    """The conv-small network of the VAT paper (about 1.4M parameters for 10 classes).

    Miyato et al., "Virtual Adversarial Training: A Regularization Method for
    Supervised and Semi-Supervised Learning", TPAMI 2018, Table 4 (the CIFAR-10
    conv-small, after Salimans et al. 2016).

    Architecture (every convolution is followed by ``BatchNorm2d`` and a leaky
    ReLU of slope 0.1; "same" padding unless stated)::

        3x3 conv 96 -> 3x3 conv 96 -> 3x3 conv 96
        2x2 max-pool, stride 2 -> dropout(p)
        3x3 conv 192 -> 3x3 conv 192 -> 3x3 conv 192
        2x2 max-pool, stride 2 -> dropout(p)
        3x3 conv 192 (valid) -> 1x1 conv 192 -> 1x1 conv 192
        global average pool -> Linear(192, n_classes) [-> BatchNorm1d if top_bn]

    Initialization and input sizes as for :class:`ConvLarge`.

    Args:
        in_channels: Number of input channels (3 for RGB, 1 for MNIST).
        n_classes: Number of output logits.
        dropout: Dropout probability after each max-pool.
        top_bn: Whether the logits go through ``BatchNorm1d``.

    Shape:
        - Input: ``[B, in_channels, H, W]`` with ``H, W >= 12``.
        - Output: ``[B, n_classes]``.
        - In training mode the batch needs at least 2 samples (batch normalization).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has an invalid value.

    Example:
        >>> import torch
        >>> from torchvat.models import ConvSmall
        >>> model = ConvSmall(in_channels=1, n_classes=10)
        >>> model(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    _name = "ConvSmall"

    def __init__(
        self,
        in_channels: int = 3,
        n_classes: int = 10,
        *,
        dropout: float = 0.5,
        top_bn: bool = False,
    ) -> None:
        super().__init__((96, 192, 192, 192, 192), in_channels, n_classes, dropout, top_bn)
