"""Fully connected networks: the MNIST MLP of the VAT papers and its small variants."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from torchvat.models._checks import check_bool, check_positive_int, check_probability, check_trim
from torchvat.models.norm import TrimmedBatchNorm1d

__all__ = ["MLP", "MNIST_HIDDEN_SIZES", "SMALL_HIDDEN_SIZES", "GaussianNoise"]

#: Hidden widths of the MNIST network of Miyato et al. (TPAMI 2018; the supervised MNIST network of
#: ICLR 2016, whose semi-supervised one was 1200-1200).
MNIST_HIDDEN_SIZES: tuple[int, ...] = (1200, 600, 300, 150)

#: Hidden widths of the network used on the 2-D synthetic data sets of the VAT papers.
SMALL_HIDDEN_SIZES: tuple[int, ...] = (100, 100)

_ACTIVATIONS = ("relu", "leaky_relu")
_LEAKY_SLOPE = 0.1


class GaussianNoise(nn.Module):
    r"""Add :math:`\mathcal{N}(0, \sigma^2)` noise to every entry in training mode; the identity in eval mode.

    The noise is drawn with :func:`torch.randn_like` from the default generator of the input's
    device, as dropout draws its masks, so torchvat's replay of the clean pass's generator state
    (:class:`torchvat.core.RNGSnapshot`) gives the probe and perturbed passes of VAT the clean
    pass's noise: the divergence at :math:`r \to 0` is 0, as with dropout.

    Args:
        std: Standard deviation :math:`\sigma` (``>= 0``; 0 is the identity).

    Raises:
        TypeError: If ``std`` is not a real number.
        ValueError: If ``std`` is negative or not finite.

    Example:
        >>> import torch
        >>> noise = GaussianNoise(0.5)
        >>> x = torch.zeros(3, 4)
        >>> bool((noise(x) != 0).any()), torch.equal(noise.eval()(x), x)
        (True, True)
    """

    #: read by torchvat's one-time check of a VAT target (``torchvat.core.perturbation``): a clean
    #: pass of a model with this layer in training mode is reproducible only by replaying its generator
    draws_random_in_training = True

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = check_noise_std(std, "std")

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x`` plus the noise in training mode, ``x`` itself in eval mode."""
        if not self.training or self.std == 0.0:
            return x
        return x + self.std * torch.randn_like(x)

    def extra_repr(self) -> str:
        """The standard deviation, shown in the module's ``repr``."""
        return f"std={self.std}"


def check_noise_std(value: object, name: str) -> float:
    """Return ``value`` as a float if it is a finite real number ``>= 0``, else raise.

    Args:
        value: The value to check (a noise standard deviation).
        name: The argument name used in the error message.

    Returns:
        The value as a ``float``.

    Raises:
        TypeError: If ``value`` is not a real number.
        ValueError: If ``value`` is negative or not finite.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a finite float >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
    return float(value)


def _make_activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    return nn.LeakyReLU(_LEAKY_SLOPE)


class MLP(nn.Module):
    r"""Multilayer perceptron with batch normalization, as used on MNIST by the VAT papers.

    Miyato et al., "Virtual Adversarial Training: A Regularization Method for Supervised
    and Semi-Supervised Learning" (TPAMI 2018), and the supervised MNIST experiments of
    "Distributional Smoothing with Virtual Adversarial Training" (ICLR 2016), train on MNIST a
    network ``784 -> 1200 -> 600 -> 300 -> 150 -> 10`` with ReLU and batch normalization (the
    authors' ICLR code also normalizes the logits: ``top_bn=True``).

    Architecture (defaults)::

        flatten [B, ...] -> [B, in_features]
        for each width h in hidden_sizes:
            Linear(h) -> BatchNorm1d(h) [-> GaussianNoise(noise_std)] -> activation -> Dropout(dropout)
        Linear(n_classes) [-> BatchNorm1d(n_classes) if top_bn]

    The hidden ``Linear`` layers have no bias when ``batch_norm`` is on, because the
    following batch normalization has its own shift. ``activation="leaky_relu"``
    uses a negative slope of 0.1. Weights use PyTorch's default initialization.
    The output is unnormalized logits.

    Args:
        in_features: Number of input features after flattening (784 for MNIST).
        n_classes: Number of output logits.
        hidden_sizes: Widths of the hidden layers, input to output. May be empty
            (a linear model).
        activation: ``"relu"`` or ``"leaky_relu"`` (slope 0.1).
        batch_norm: Whether each hidden layer has ``BatchNorm1d``.
        bn_trim: With ``batch_norm``, ``None`` (the default: ``BatchNorm1d``, as in the papers)
            or a number of robust standard deviations: each hidden layer's batch statistics
            then leave out the values that far from the batch's median
            (:class:`~torchvat.models.TrimmedBatchNorm1d`; 5 is the measured setting), so that a
            few rows far out on some feature do not set the statistics the rest of their batch
            is normalized with. Not the default: see that class for where it helps and where
            it did not.
        top_bn: Whether the logits go through ``BatchNorm1d``.
        dropout: Dropout probability after each hidden activation (0 disables it).
        noise_std: Standard deviation of the Gaussian noise added to each hidden layer in
            training mode (0, the default, adds none; the TPAMI 2018 MNIST network used 0.5).
            It is added after the batch normalization (without ``batch_norm``: after the
            ``Linear``), before the activation, as the ladder networks of Rasmus et al. (2015)
            add it to the normalized pre-activation: the noise then has a fixed size relative
            to a signal of unit variance, which the network cannot shrink by scaling its
            weights (before BatchNorm it could), and the batch statistics, hence the running
            statistics that evaluation uses, are those of the clean signal. Salimans et al.
            (2016), whom the VAT authors followed, add it to each layer's output in a network
            without BatchNorm; there, after the activation would put it before the next
            layer's BatchNorm. The noise is drawn with :func:`torch.randn_like`, like dropout
            masks, so VAT's probe and perturbed passes replay the clean pass's noise. Off in
            eval mode.

    Shape:
        - Input: ``[B, *]`` with ``prod(*) == in_features``; it is flattened.
        - Output: ``[B, n_classes]``.
        - In training mode with ``batch_norm`` or ``top_bn`` the batch needs at least
          2 samples.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has an invalid value.

    Example:
        >>> import torch
        >>> from torchvat.models import MLP
        >>> model = MLP(in_features=784, n_classes=10)
        >>> model(torch.randn(4, 1, 28, 28)).shape
        torch.Size([4, 10])
        >>> toy = MLP(in_features=2, n_classes=3, hidden_sizes=(100, 100), batch_norm=False)
        >>> toy(torch.randn(5, 2)).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        in_features: int = 784,
        n_classes: int = 10,
        hidden_sizes: Sequence[int] = MNIST_HIDDEN_SIZES,
        *,
        activation: str = "relu",
        batch_norm: bool = True,
        bn_trim: float | None = None,
        top_bn: bool = False,
        dropout: float = 0.0,
        noise_std: float = 0.0,
    ) -> None:
        super().__init__()
        in_features = check_positive_int(in_features, "in_features")
        n_classes = check_positive_int(n_classes, "n_classes")
        if isinstance(hidden_sizes, str | bytes) or not isinstance(hidden_sizes, Sequence):
            raise TypeError(f"hidden_sizes must be a sequence of positive ints, got {hidden_sizes!r}")
        sizes = tuple(check_positive_int(h, f"hidden_sizes[{i}]") for i, h in enumerate(hidden_sizes))
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(_ACTIVATIONS)}, got {activation!r}")
        check_bool(batch_norm, "batch_norm")
        check_bool(top_bn, "top_bn")
        trim = check_trim(bn_trim, "bn_trim")
        dropout = check_probability(dropout, "dropout")
        noise_std = check_noise_std(noise_std, "noise_std")

        self.in_features = in_features
        self.n_classes = n_classes
        self.hidden_sizes = sizes

        layers: list[nn.Module] = []
        width = in_features
        for h in sizes:
            layers.append(nn.Linear(width, h, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h) if trim is None else TrimmedBatchNorm1d(h, trim=trim))
            if noise_std > 0.0:
                layers.append(GaussianNoise(noise_std))
            layers.append(_make_activation(activation))
            if dropout > 0.0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, n_classes)
        self.top_bn = nn.BatchNorm1d(n_classes) if top_bn else None

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits for a batch ``x`` of shape ``[B, *]``.

        Args:
            x: Input batch; every dimension after the first is flattened.

        Returns:
            Logits of shape ``[B, n_classes]``.

        Raises:
            ValueError: If ``x`` has fewer than two dimensions or the wrong number
                of features per sample.
        """
        if x.dim() < 2:
            raise ValueError(f"MLP expects input of shape [B, ...], got {tuple(x.shape)}")
        if math.prod(x.shape[1:]) != self.in_features:
            raise ValueError(f"MLP expects {self.in_features} features per sample, got input of shape {tuple(x.shape)}")
        h = self.features(torch.flatten(x, 1))
        logits = self.classifier(h)
        if self.top_bn is not None:
            logits = self.top_bn(logits)
        return logits
