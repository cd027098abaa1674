"""Argument checks shared by the model constructors (private)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from torch import Tensor

__all__ = [
    "check_bool",
    "check_input_shape",
    "check_positive_int",
    "check_probability",
    "check_spatial_input",
    "check_trim",
    "flat_features",
]


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an ``int`` if it is an integer (not ``bool``) >= 1, else raise.

    Numpy integers (``y.max() + 1``, entries of ``array.shape``) count as integers.

    Args:
        value: The value to check.
        name: The argument name used in the error message.

    Returns:
        The value as an ``int``.

    Raises:
        TypeError: If ``value`` is not an integer.
        ValueError: If ``value`` is smaller than 1.
    """
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def check_probability(value: object, name: str) -> float:
    """Return ``value`` if it is a real number in ``[0, 1)``, else raise.

    Args:
        value: The value to check (a dropout probability).
        name: The argument name used in the error message.

    Returns:
        The value as a ``float``.

    Raises:
        TypeError: If ``value`` is not a real number.
        ValueError: If ``value`` is outside ``[0, 1)``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a float in [0, 1), got {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1), got {value}")
    return float(value)


def check_bool(value: object, name: str) -> bool:
    """Return ``value`` if it is a ``bool``, else raise ``TypeError``.

    Args:
        value: The value to check.
        name: The argument name used in the error message.

    Returns:
        The value.

    Raises:
        TypeError: If ``value`` is not a ``bool``.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def check_input_shape(input_shape: object) -> tuple[int, ...]:
    """Validate the per-sample shape of a model input (batch dimension excluded).

    Args:
        input_shape: A non-empty sequence of positive integers (numpy integers too), e.g. ``(784,)``
            or ``(3, 32, 32)``.

    Returns:
        The shape as a tuple of ints.

    Raises:
        ValueError: If ``input_shape`` is not a non-empty sequence of positive ints.
    """
    if isinstance(input_shape, str | bytes) or not isinstance(input_shape, Sequence):
        raise ValueError(
            "input_shape must be a non-empty tuple of positive ints (per-sample shape, "
            f"without the batch dimension), got {input_shape!r}"
        )
    shape = tuple(input_shape)
    if not shape or any(not isinstance(d, numbers.Integral) or isinstance(d, bool) or int(d) < 1 for d in shape):
        raise ValueError(
            "input_shape must be a non-empty tuple of positive ints (per-sample shape, "
            f"without the batch dimension), got {input_shape!r}"
        )
    return tuple(int(d) for d in shape)


def flat_features(shape: tuple[int, ...]) -> int:
    """Return the number of features of one sample of shape ``shape``."""
    return math.prod(shape)


def check_spatial_input(x: Tensor, in_channels: int, min_size: int, model: str) -> None:
    """Check that ``x`` is a ``[B, C, H, W]`` batch a conv network can take.

    Args:
        x: The input batch.
        in_channels: The number of channels the network expects.
        min_size: The smallest height and width the network accepts.
        model: The network's name, for the message.

    Raises:
        ValueError: If ``x`` has the wrong rank, channel count or spatial size.
    """
    if x.dim() != 4:
        raise ValueError(f"{model} expects input of shape [B, C, H, W], got {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(f"{model} expects {in_channels} input channels, got input of shape {tuple(x.shape)}")
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(f"{model} needs height and width >= {min_size}, got input of shape {tuple(x.shape)}")


def check_trim(value: object, name: str = "trim") -> float | None:
    """Return ``value`` as a float if it is a finite real number ``> 0``, ``None`` as is, else raise.

    Raises:
        TypeError: If ``value`` is not a real number or ``None``.
        ValueError: If ``value`` is not finite or not positive.

    Example:
        >>> check_trim(5), check_trim(None)
        (5.0, None)
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a finite float > 0 or None, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite float > 0 or None, got {value!r}")
    return float(value)
