"""Wide residual networks (WRN-28-2 as in Oliver et al. 2018)."""

from __future__ import annotations

from torch import Tensor, nn

from torchvat.models._checks import check_positive_int, check_probability

__all__ = ["WideBasicBlock", "WideResNet", "wrn28_2"]

_LEAKY_SLOPE = 0.1


class WideBasicBlock(nn.Module):
    """Pre-activation wide basic block: ``(BN -> lReLU -> 3x3 conv) x 2`` plus shortcut.

    When the block changes the number of channels its shortcut is a 1x1
    convolution with the block's stride, otherwise the identity. With
    ``activate_before_residual`` the first BN + leaky ReLU is applied to the input
    before it is split, so the shortcut also sees the activated input (used by
    the first block of a WRN, as in Oliver et al. 2018).

    Args:
        in_channels: Number of input channels.
        out_channels: Number of output channels.
        stride: Stride of the first 3x3 convolution (and of the shortcut).
        bn_momentum: ``momentum`` of the batch-norm layers (PyTorch convention).
        dropout: Dropout probability between the two convolutions.
        activate_before_residual: Whether the shortcut takes the activated input.

    Shape:
        - Input: ``[B, in_channels, H, W]``.
        - Output: ``[B, out_channels, ceil(H / stride), ceil(W / stride)]``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has an invalid value.

    Example:
        >>> import torch
        >>> block = WideBasicBlock(16, 32, stride=2)
        >>> block(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 32, 4, 4])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        bn_momentum: float = 0.001,
        dropout: float = 0.0,
        activate_before_residual: bool = False,
    ) -> None:
        super().__init__()
        in_channels = check_positive_int(in_channels, "in_channels")
        out_channels = check_positive_int(out_channels, "out_channels")
        stride = check_positive_int(stride, "stride")
        dropout = check_probability(dropout, "dropout")
        self.bn1 = nn.BatchNorm2d(in_channels, momentum=bn_momentum)
        self.act1 = nn.LeakyReLU(_LEAKY_SLOPE)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, momentum=bn_momentum)
        self.act2 = nn.LeakyReLU(_LEAKY_SLOPE)
        self.dropout = nn.Dropout(dropout) if dropout > 0.0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        if in_channels != out_channels or stride != 1:
            self.shortcut: nn.Module = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
        else:
            self.shortcut = nn.Identity()
        self.activate_before_residual = activate_before_residual

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: Input of shape ``[B, in_channels, H, W]``.

        Returns:
            Output of shape ``[B, out_channels, H', W']``.
        """
        pre = self.act1(self.bn1(x))
        residual = pre if self.activate_before_residual else x
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.act2(self.bn2(out))))
        return out + self.shortcut(residual)


class WideResNet(nn.Module):
    r"""Wide residual network with pre-activation blocks and leaky ReLU.

    Zagoruyko & Komodakis, "Wide Residual Networks" (BMVC 2016), in the variant of
    Oliver et al., "Realistic Evaluation of Deep Semi-Supervised Learning
    Algorithms" (NeurIPS 2018), which became the standard SSL benchmark network
    (WRN-28-2, about 1.47M parameters for 10 classes).

    Architecture for depth :math:`d = 6n + 4` and widen factor :math:`k`::

        3x3 conv 16
        group 1: n blocks, 16k channels, stride 1 (first block activates before residual)
        group 2: n blocks, 32k channels, stride 2
        group 3: n blocks, 64k channels, stride 2
        BN -> leaky ReLU -> global average pool -> Linear(64k, n_classes)

    Each block is a :class:`WideBasicBlock`. Batch normalization uses
    ``momentum=0.001`` (TensorFlow's decay 0.999), the leaky ReLUs slope 0.1.
    Convolutions are initialized with Kaiming normal (fan-out, leaky ReLU 0.1),
    batch-norm scales with 1 and shifts with 0, the linear layer with Xavier
    normal weights and zero bias.

    Args:
        depth: Total depth; ``(depth - 4)`` must be divisible by 6.
        widen_factor: Width multiplier ``k``.
        n_classes: Number of output logits.
        in_channels: Number of input channels.
        bn_momentum: ``momentum`` of every batch-norm layer (PyTorch convention).
        dropout: Dropout probability inside the blocks (0 in Oliver et al.).

    Shape:
        - Input: ``[B, in_channels, H, W]``.
        - Output: ``[B, n_classes]``.
        - In training mode the batch needs at least 2 samples (batch normalization).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has an invalid value.

    Example:
        >>> import torch
        >>> from torchvat.models import WideResNet
        >>> model = WideResNet(depth=10, widen_factor=1, n_classes=5)
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 2,
        n_classes: int = 10,
        in_channels: int = 3,
        *,
        bn_momentum: float = 0.001,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        depth = check_positive_int(depth, "depth")
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
        widen_factor = check_positive_int(widen_factor, "widen_factor")
        n_classes = check_positive_int(n_classes, "n_classes")
        in_channels = check_positive_int(in_channels, "in_channels")
        if isinstance(bn_momentum, bool) or not isinstance(bn_momentum, int | float):
            raise TypeError(f"bn_momentum must be a float in (0, 1], got {bn_momentum!r}")
        if not 0.0 < bn_momentum <= 1.0:
            raise ValueError(f"bn_momentum must be a float in (0, 1], got {bn_momentum}")
        dropout = check_probability(dropout, "dropout")

        self.depth = depth
        self.widen_factor = widen_factor
        self.n_classes = n_classes
        self.in_channels = in_channels

        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, padding=1, bias=False)
        groups = []
        for g, stride in enumerate((1, 2, 2)):
            blocks = []
            for i in range(n):
                blocks.append(
                    WideBasicBlock(
                        widths[g] if i == 0 else widths[g + 1],
                        widths[g + 1],
                        stride if i == 0 else 1,
                        bn_momentum=bn_momentum,
                        dropout=dropout,
                        activate_before_residual=(g == 0 and i == 0),
                    )
                )
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(widths[3], momentum=bn_momentum)
        self.act = nn.LeakyReLU(_LEAKY_SLOPE)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], n_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=_LEAKY_SLOPE, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits for an image batch ``x`` of shape ``[B, C, H, W]``.

        Args:
            x: Input images with ``C == in_channels``.

        Returns:
            Logits of shape ``[B, n_classes]``.

        Raises:
            ValueError: If ``x`` is not ``[B, in_channels, H, W]``.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"WideResNet expects input of shape [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        out = self.conv1(x)
        out = self.block3(self.block2(self.block1(out)))
        out = self.pool(self.act(self.bn(out)))
        return self.fc(out.flatten(1))


def wrn28_2(n_classes: int = 10, in_channels: int = 3, **kwargs: object) -> WideResNet:
    """Build WRN-28-2, the network of Oliver et al. 2018 (about 1.47M parameters).

    Args:
        n_classes: Number of output logits.
        in_channels: Number of input channels.
        **kwargs: Further keyword arguments of :class:`WideResNet`
            (``bn_momentum``, ``dropout``).

    Returns:
        A ``WideResNet(depth=28, widen_factor=2, ...)``.

    Example:
        >>> import torch
        >>> from torchvat.models import wrn28_2
        >>> model = wrn28_2(n_classes=10)
        >>> sum(p.numel() for p in model.parameters())
        1467610
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    return WideResNet(28, 2, n_classes, in_channels, **kwargs)  # type: ignore[arg-type]
