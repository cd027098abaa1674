"""Read the ``metrics.jsonl`` files the trainer writes."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

__all__ = ["read_metrics"]


def read_metrics(path: str | os.PathLike[str], kind: str = "eval") -> list[dict[str, float]]:
    r"""The records of one kind from a ``metrics.jsonl`` file, in order.

    A resumed run appends to the file, so a step may appear twice; the later record wins. A torn
    last line (a run killed while writing it) is skipped with a warning; records without a
    ``step`` are ignored.

    Args:
        path: The file.
        kind: ``"eval"`` (held-out evaluations) or ``"train"`` (training means).

    Returns:
        The records without their ``kind`` key, sorted by ``step``.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If ``kind`` is invalid or a line is not JSON.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = os.path.join(d, "metrics.jsonl")
        ...     with open(p, "w") as f:
        ...         _ = f.write('{"kind": "eval", "step": 10, "test_error": 0.2}\n')
        ...     read_metrics(p)
        [{'step': 10, 'test_error': 0.2}]
    """
    if kind not in ("eval", "train"):
        raise ValueError(f"kind must be 'eval' or 'train', got {kind!r}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"metrics file not found: {p}")
    by_step: dict[float, dict[str, float]] = {}
    text = p.read_text(encoding="utf-8")
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if n == len(lines) and not text.endswith("\n"):  # a run killed mid-write: its last line is torn
                warnings.warn(f"{p}, line {n}: an incomplete last line (a killed run?) was skipped", stacklevel=2)
                break
            raise ValueError(f"{p}, line {n}: not JSON ({err})") from err
        if record.pop("kind", None) == kind and "step" in record:
            by_step[record["step"]] = record
    return [by_step[k] for k in sorted(by_step)]
