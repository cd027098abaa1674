"""Writing a run configuration as TOML (``tomllib`` reads it back)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["dump_toml"]


def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v, where)}" for k, v in value.items()) + "}"
    raise TypeError(f"{where} must be a TOML value (str, number, bool, list, table), got {type(value).__name__}")


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def dump_toml(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """Serialize ``{section: {key: value}}`` as TOML (``None`` values are left out).

    Nested dicts become sub-tables ``[section.key]``.

    Args:
        tables: Sections of plain values.

    Returns:
        TOML text that ``tomllib.loads`` reads back to the same values.

    Example:
        >>> text = dump_toml({"train": {"eps": 0.5, "amp": None, "extra": {"k": 1}}})
        >>> import tomllib; tomllib.loads(text)
        {'train': {'eps': 0.5, 'extra': {'k': 1}}}
    """
    lines: list[str] = []
    for section, values in tables.items():
        subtables = {k: v for k, v in values.items() if isinstance(v, Mapping)}
        lines.append(f"[{_toml_key(section)}]")
        for key, value in values.items():
            if value is None or key in subtables:
                continue
            lines.append(f"{_toml_key(key)} = {_toml_value(value, f'{section}.{key}')}")
        lines.append("")
        for key, sub in subtables.items():
            lines.append(f"[{_toml_key(section)}.{_toml_key(key)}]")
            lines += [
                f"{_toml_key(k)} = {_toml_value(v, f'{section}.{key}.{k}')}" for k, v in sub.items() if v is not None
            ]
            lines.append("")
    return "\n".join(lines)
