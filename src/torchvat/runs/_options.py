"""Checking keyword options (from TOML or the command line) against the function they go to."""

from __future__ import annotations

import collections.abc
import inspect
import numbers
import os
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from torchvat.runs.errors import UsageError

__all__ = ["check_call_options"]


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _fits(value: Any, hint: Any) -> bool:
    """Whether a TOML/command-line value fits a type hint (hints this check does not know fit anything)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str or hint is os.PathLike or origin is os.PathLike:
        return isinstance(value, str | os.PathLike)
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, list | tuple):
            return False
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(_fits(v, args[0]) for v in value)
    return True


def _describe(hint: Any) -> str:
    """What a type hint asks for, in words (``int | None`` -> ``an integer``)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        words = [_describe(h) for h in typing.get_args(hint) if h is not type(None)]
        return " or ".join(dict.fromkeys(words))
    if hint in _KINDS:
        return _KINDS[hint]
    if hint is os.PathLike or origin is os.PathLike:
        return "a string"
    if origin in (tuple, list, collections.abc.Sequence):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if origin is tuple and args and len(typing.get_args(hint)) == len(args):
            return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
        return "a list" if not args else f"a list of values that are each {_describe(args[0])}"
    return getattr(hint, "__name__", str(hint))


def check_call_options(
    options: Mapping[str, Any], fn: Callable[..., Any], *, reserved: Mapping[str, str], what: str, flag: str
) -> None:
    """Check keyword options against the signature and type hints of the function they go to.

    Args:
        options: The options.
        fn: The function (or class) they are passed to.
        reserved: Parameters set otherwise, each with the option that sets it.
        what: What takes the options, for messages (``dataset 'moons'``).
        flag: Where the options come from, for messages.

    Raises:
        UsageError: For an unknown or reserved key, or a value of the wrong kind.
    """
    params = inspect.signature(fn).parameters
    try:
        target: Any = fn  # a class: its own __init__'s hints (read from the class, not an instance)
        hints = typing.get_type_hints(target.__init__ if isinstance(fn, type) else fn)
    except (NameError, TypeError):  # a hint that does not resolve: check the names only
        hints = {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = [name for name, p in params.items() if p.kind in kinds and name not in reserved and name != "self"]
    for key in options:
        if key in reserved:
            raise UsageError(f"{flag}: {key!r} is set by {reserved[key]}, not as an option of {what}")
    unknown = [key for key in options if key not in accepted]
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise UsageError(f"{flag}: {what} takes the options {accepted}, got {unknown} besides")
    for key, value in options.items():
        if key in hints and not _fits(value, hints[key]):
            raise UsageError(f"{flag}: option {key!r} of {what} must be {_describe(hints[key])}, got {value!r}")
