"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tomllib
from collections.abc import Iterator
from typing import Any, NoReturn

import torch

from torchvat.runs import UsageError

__all__ = [
    "ArgumentParser",
    "add_common_options",
    "l2_size",
    "nonnegative_float",
    "parse_assignments",
    "positive_int",
    "threads",
]


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose errors are one line: ``torchvat: error: ...`` (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        """Print the error as one line with a pointer to ``--help`` and exit with code 2.

        Args:
            message: The problem.
        """
        sys.stderr.write(f"torchvat: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def positive_int(text: str) -> int:
    """``argparse`` type: an integer >= 1.

    Example:
        >>> positive_int("3")
        3
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """``argparse`` type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def nonnegative_float(text: str) -> float:
    """``argparse`` type: a finite number >= 0.

    Example:
        >>> nonnegative_float("0.5")
        0.5
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def parse_value(text: str) -> Any:
    """A TOML value (number, bool, string, list, inline table), or the raw text.

    Example:
        >>> parse_value("3"), parse_value("true"), parse_value("[1, 2]"), parse_value("relu")
        (3, True, [1, 2], 'relu')
    """
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignments(items: list[str] | None, option: str) -> dict[str, Any]:
    """Turn repeated ``KEY=VALUE`` options into a dict (values parsed with :func:`parse_value`).

    Args:
        items: The raw option values.
        option: The option's name, for error messages.

    Returns:
        The dict.

    Raises:
        UsageError: If an item has no ``=``.

    Example:
        >>> parse_assignments(["dropout=0.1", "top_bn=true"], "--model-option")
        {'dropout': 0.1, 'top_bn': True}
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} must look like KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = parse_value(value.strip())
    return out


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--debug`` and ``--threads`` to a subcommand's parser.

    Args:
        parser: The subcommand's parser.
    """
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads for PyTorch (default: PyTorch's choice; 1 is fastest for tiny models)",
    )


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Use ``n`` PyTorch CPU threads inside the block (``None``: leave as is).

    Args:
        n: Number of threads.
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def l2_size(eps: float, norm: str, input_shape: tuple[int, ...]) -> float:
    """The L2 length of a training perturbation of size ``eps`` in ``norm`` (an L-inf box corner: eps * sqrt(d))."""
    return eps * math.sqrt(math.prod(input_shape)) if norm == "linf" else eps
