"""Build the papers' networks by name from the shape of one input sample."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from torchvat.models._checks import check_input_shape, check_positive_int, flat_features
from torchvat.models.conv import ConvLarge, ConvSmall
from torchvat.models.mlp import MLP, MNIST_HIDDEN_SIZES, SMALL_HIDDEN_SIZES
from torchvat.models.wrn import WideResNet

__all__ = [
    "available_models",
    "build_model",
    "canonical_model_name",
    "default_model",
    "default_model_name",
    "model_class",
    "reserved_arguments",
    "scaled_hidden_sizes",
]

# Flat inputs with at most this many features get the small (toy-data) MLP by default.
_SMALL_MLP_MAX_FEATURES = 16
# Smallest height/width the conv networks accept (two 2x2 pools, then a valid 3x3 conv).
_CONV_MIN_SIZE = 12


def scaled_hidden_sizes(in_features: int) -> tuple[int, ...]:
    """Hidden widths of the generic ``"mlp"`` for ``in_features`` inputs.

    The first width is ``min(1200, max(128, 4 * in_features))``; the next ones
    halve it, up to four hidden layers, keeping only widths >= 64. For 784-pixel
    MNIST (and any input with at least 300 features) this gives the paper's
    ``(1200, 600, 300, 150)``; 64 features give ``(256, 128, 64)`` and 20
    features ``(128, 64)``.

    Args:
        in_features: Number of input features.

    Returns:
        The hidden widths, input to output.

    Raises:
        TypeError: If ``in_features`` is not an integer.
        ValueError: If ``in_features`` is not positive.

    Example:
        >>> scaled_hidden_sizes(784)
        (1200, 600, 300, 150)
        >>> scaled_hidden_sizes(64)
        (256, 128, 64)
    """
    in_features = check_positive_int(in_features, "in_features")
    first = min(1200, max(128, 4 * in_features))
    return tuple(first >> i for i in range(4) if first >> i >= 64)


def _flat(input_shape: tuple[int, ...]) -> int:
    return flat_features(input_shape)


def _image(input_shape: tuple[int, ...], name: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"input_shape for {name!r} must be (channels, height, width), got {input_shape!r}")
    c, h, w = input_shape
    if h < _CONV_MIN_SIZE or w < _CONV_MIN_SIZE:
        raise ValueError(f"input_shape for {name!r} needs height and width >= {_CONV_MIN_SIZE}, got {input_shape!r}")
    return c, h, w


def _build_mlp(shape: tuple[int, ...], n_classes: int, **kwargs: Any) -> nn.Module:
    d = _flat(shape)
    kwargs.setdefault("hidden_sizes", scaled_hidden_sizes(d))
    return MLP(d, n_classes, **kwargs)


def _build_mnist_mlp(shape: tuple[int, ...], n_classes: int, **kwargs: Any) -> nn.Module:
    kwargs.setdefault("hidden_sizes", MNIST_HIDDEN_SIZES)
    return MLP(_flat(shape), n_classes, **kwargs)


def _build_small_mlp(shape: tuple[int, ...], n_classes: int, **kwargs: Any) -> nn.Module:
    kwargs.setdefault("hidden_sizes", SMALL_HIDDEN_SIZES)
    kwargs.setdefault("batch_norm", False)
    return MLP(_flat(shape), n_classes, **kwargs)


def _build_conv_small(shape: tuple[int, ...], n_classes: int, **kwargs: Any) -> nn.Module:
    c, _, _ = _image(shape, "conv-small")
    return ConvSmall(c, n_classes, **kwargs)


def _build_conv_large(shape: tuple[int, ...], n_classes: int, **kwargs: Any) -> nn.Module:
    c, _, _ = _image(shape, "conv-large")
    return ConvLarge(c, n_classes, **kwargs)


def _build_wrn28_2(shape: tuple[int, ...], n_classes: int, **kwargs: Any) -> nn.Module:
    if len(shape) != 3:
        raise ValueError(f"input_shape for 'wrn-28-2' must be (channels, height, width), got {shape!r}")
    return WideResNet(28, 2, n_classes, shape[0], **kwargs)


@dataclass(frozen=True)
class _Entry:
    """One model name: its builder, the class it builds, and the constructor arguments it derives."""

    build: Callable[..., nn.Module]
    cls: type[nn.Module]
    #: each constructor argument the builder sets, with the build_model argument it comes from
    derived: Mapping[str, str]


_FLAT = {"in_features": "input_shape", "n_classes": "n_classes"}
_IMAGE = {"in_channels": "input_shape", "n_classes": "n_classes"}
_REGISTRY: dict[str, _Entry] = {
    "mlp": _Entry(_build_mlp, MLP, _FLAT),
    "mnist-mlp": _Entry(_build_mnist_mlp, MLP, _FLAT),
    "small-mlp": _Entry(_build_small_mlp, MLP, _FLAT),
    "conv-small": _Entry(_build_conv_small, ConvSmall, _IMAGE),
    "conv-large": _Entry(_build_conv_large, ConvLarge, _IMAGE),
    "wrn-28-2": _Entry(_build_wrn28_2, WideResNet, {**_IMAGE, "depth": "name", "widen_factor": "name"}),
}


def canonical_model_name(name: str) -> str:
    """The name :func:`build_model` knows model ``name`` by: case, spaces around it and ``_``/``-`` ignored.

    Args:
        name: A model name, e.g. ``"Conv_Small"``.

    Returns:
        Its name in :func:`available_models`.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: If ``name`` is unknown (the message lists the known names).

    Example:
        >>> canonical_model_name(" WRN_28_2 ")
        'wrn-28-2'
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {available_models()}, got {name!r}")
    key = name.strip().lower().replace("_", "-")
    if key not in _REGISTRY:
        raise ValueError(f"unknown model name {name!r}; known names: {available_models()}")
    return key


def model_class(name: str) -> type[nn.Module]:
    """The class :func:`build_model` builds for model ``name``.

    Args:
        name: A model name (as :func:`canonical_model_name` reads it).

    Returns:
        The class; its constructor's keyword arguments, less :func:`reserved_arguments`, are
        what ``build_model(name, ...)`` accepts in ``**kwargs``.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: If ``name`` is unknown.

    Example:
        >>> model_class("small-mlp").__name__
        'MLP'
    """
    return _REGISTRY[canonical_model_name(name)].cls


def reserved_arguments(name: str) -> dict[str, str]:
    """The constructor arguments :func:`build_model` sets itself for model ``name``, which ``**kwargs`` may not.

    Args:
        name: A model name (as :func:`canonical_model_name` reads it).

    Returns:
        Each such argument, with the argument of :func:`build_model` it is derived from
        (``"input_shape"``, ``"n_classes"`` or ``"name"``).

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: If ``name`` is unknown.

    Example:
        >>> reserved_arguments("wrn-28-2")
        {'in_channels': 'input_shape', 'n_classes': 'n_classes', 'depth': 'name', 'widen_factor': 'name'}
    """
    return dict(_REGISTRY[canonical_model_name(name)].derived)


def available_models() -> list[str]:
    """Return the names :func:`build_model` accepts, sorted.

    Returns:
        The model names.

    Example:
        >>> available_models()
        ['conv-large', 'conv-small', 'mlp', 'mnist-mlp', 'small-mlp', 'wrn-28-2']
    """
    return sorted(_REGISTRY)


def _check_n_classes(n_classes: object) -> int:
    """``n_classes`` as an ``int``: any integer but a ``bool`` (``np.int64`` from ``y.max() + 1`` too), >= 1."""
    if not isinstance(n_classes, numbers.Integral) or isinstance(n_classes, bool) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    return int(n_classes)


def build_model(name: str, *, input_shape: tuple[int, ...], n_classes: int, **kwargs: Any) -> nn.Module:
    """Build one of the papers' networks by name.

    Names (case-insensitive, ``_`` and ``-`` interchangeable):

    - ``"mlp"``: :class:`MLP` on the flattened input, hidden widths from
      :func:`scaled_hidden_sizes` (the paper's 1200-600-300-150 for MNIST); ``bn_trim=5``
      gives it :class:`TrimmedBatchNorm1d` (batch statistics without the values more than 5
      robust standard deviations from the batch's median).
    - ``"mnist-mlp"``: :class:`MLP` with the paper's widths 1200-600-300-150.
    - ``"small-mlp"``: :class:`MLP` with widths 100-100, ReLU and no batch
      normalization (the network of the papers' 2-D synthetic experiments;
      pass ``batch_norm=True`` to add it).
    - ``"conv-small"`` / ``"conv-large"``: :class:`ConvSmall` / :class:`ConvLarge`;
      ``input_shape`` must be ``(C, H, W)`` with ``H, W >= 12``.
    - ``"wrn-28-2"``: :class:`WideResNet` with depth 28 and widen factor 2;
      ``input_shape`` must be ``(C, H, W)``.

    Args:
        name: The model name, one of :func:`available_models`.
        input_shape: Shape of one input sample, without the batch dimension,
            e.g. ``(784,)``, ``(2,)`` or ``(3, 32, 32)``.
        n_classes: Number of output logits.
        **kwargs: Further keyword arguments of the model's constructor (for
            example ``dropout``, ``top_bn``, ``hidden_sizes``, ``activation``).
            Arguments derived from ``input_shape``, ``n_classes`` or the name
            (``in_features``, ``in_channels``, ...: :func:`reserved_arguments`) may not be passed.

    Returns:
        The model, in training mode.

    Raises:
        TypeError: If ``name`` is not a string or a derived argument is passed in
            ``kwargs``.
        ValueError: If ``name`` is unknown, or ``input_shape`` or ``n_classes`` is
            invalid for the model.

    Example:
        >>> import torch
        >>> model = build_model("mnist-mlp", input_shape=(1, 28, 28), n_classes=10)
        >>> model(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
        >>> build_model("small-mlp", input_shape=(2,), n_classes=2)(torch.randn(3, 2)).shape
        torch.Size([3, 2])
    """
    key = canonical_model_name(name)
    shape = check_input_shape(input_shape)
    n_classes = _check_n_classes(n_classes)
    entry = _REGISTRY[key]
    for arg, source in entry.derived.items():
        if arg in kwargs:
            raise TypeError(
                f"build_model({key!r}) derives {arg!r} from {'the name' if source == 'name' else source}; "
                f"do not pass it as a keyword argument (got {arg}={kwargs[arg]!r})"
            )
    return entry.build(shape, n_classes, **kwargs)


def default_model_name(input_shape: tuple[int, ...]) -> str:
    """Name of the network :func:`default_model` builds for ``input_shape``.

    The rule:

    - flat vectors ``(d,)`` with ``d <= 16`` (2-D toy data, small tabular data):
      ``"small-mlp"``, without batch normalization;
    - any other shape that is not a ``(C, H, W)`` image of at least 12x12
      (flat pixels such as ``(784,)``, tabular data, ``(H, W)`` arrays, tiny
      images): ``"mlp"`` on the flattened input, widths from
      :func:`scaled_hidden_sizes`, with batch normalization;
    - ``(C, H, W)`` images with 3 channels and ``H, W >= 32`` (CIFAR-10, SVHN):
      ``"conv-large"``, the paper's network for those sets;
    - other ``(C, H, W)`` images of at least 12x12 (MNIST, Fashion-MNIST):
      ``"conv-small"``.

    Args:
        input_shape: Shape of one input sample, without the batch dimension.

    Returns:
        A name from :func:`available_models`.

    Raises:
        ValueError: If ``input_shape`` is not a non-empty tuple of positive ints.

    Example:
        >>> default_model_name((2,))
        'small-mlp'
        >>> default_model_name((784,))
        'mlp'
        >>> default_model_name((1, 28, 28))
        'conv-small'
        >>> default_model_name((3, 32, 32))
        'conv-large'
    """
    shape = check_input_shape(input_shape)
    if len(shape) == 1 and shape[0] <= _SMALL_MLP_MAX_FEATURES:
        return "small-mlp"
    if len(shape) == 3 and min(shape[1:]) >= _CONV_MIN_SIZE:
        c, h, w = shape
        if c == 3 and h >= 32 and w >= 32:
            return "conv-large"
        return "conv-small"
    return "mlp"


def default_model(input_shape: tuple[int, ...], n_classes: int, **kwargs: Any) -> nn.Module:
    """Build a sensible network for inputs of ``input_shape`` when none is named.

    Equivalent to ``build_model(default_model_name(input_shape), ...)``; see
    :func:`default_model_name` for the rule. This is the network of every door that is not
    given one (the trainer's runs, the CLI, :class:`torchvat.sklearn.VATClassifier`), so the
    choice of family and of batch normalization per input size is made here only.

    Args:
        input_shape: Shape of one input sample, without the batch dimension.
        n_classes: Number of output logits.
        **kwargs: Constructor arguments of the chosen network that replace its defaults,
            for example ``hidden_sizes=(256, 256)`` for the vector networks (the family and
            its batch normalization stay those the rule chose for ``input_shape``).

    Returns:
        The model, in training mode.

    Raises:
        ValueError: If ``input_shape`` or ``n_classes`` is invalid.
        TypeError: If ``kwargs`` names an argument the network derives itself.

    Example:
        >>> import torch
        >>> model = default_model((2,), n_classes=3)
        >>> model(torch.randn(4, 2)).shape
        torch.Size([4, 3])
        >>> default_model((50,), n_classes=10, hidden_sizes=(256, 256)).hidden_sizes
        (256, 256)
    """
    return build_model(default_model_name(input_shape), input_shape=input_shape, n_classes=n_classes, **kwargs)
