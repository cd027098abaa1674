"""Tables for the terminal and a small Markdown report builder."""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["Report", "format_cell", "markdown_table", "text_table"]


def format_cell(value: Any, digits: int = 4) -> str:
    """Format one table cell: floats with ``digits`` significant digits, the rest with ``str``.

    Args:
        value: The cell value.
        digits: Significant digits of floats.

    Returns:
        The text.

    Example:
        >>> format_cell(0.123456), format_cell(3), format_cell(None)
        ('0.1235', '3', '')
    """
    if value is None:
        return ""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):  # numpy floats too
        return f"{float(value):.{digits}g}"
    return str(value)


def _cells(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[list[str]]:
    width = len(headers)
    out = []
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"rows[{i}] must have {width} cells like headers, got {len(row)}")
        out.append([format_cell(v) for v in row])
    return out


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned plain-text table (numbers right-aligned) for the terminal.

    Args:
        headers: Column names.
        rows: Rows of cells, each with ``len(headers)`` entries.

    Returns:
        The table, lines joined with newlines.

    Raises:
        ValueError: If a row has the wrong number of cells.

    Example:
        >>> print(text_table(["method", "error"], [["vat", 0.01], ["supervised", 0.175]]))
        method      error
        ----------  -----
        vat          0.01
        supervised  0.175
    """
    cells = _cells(headers, rows)
    cols = list(zip(list(headers), *cells, strict=True)) if cells else [(h,) for h in headers]
    widths = [max(len(c) for c in col) for col in cols]
    numeric = [all(_is_number(r[j]) for r in rows) and bool(rows) for j in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    lines = [line(list(headers)), "  ".join("-" * w for w in widths)]
    lines += [line(r) for r in cells]
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table.

    Args:
        headers: Column names.
        rows: Rows of cells, each with ``len(headers)`` entries.

    Returns:
        The table text.

    Raises:
        ValueError: If a row has the wrong number of cells.

    Example:
        >>> print(markdown_table(["method", "error"], [["vat", 0.01]]))
        | method | error |
        |---|---:|
        | vat | 0.01 |
    """
    cells = _cells(headers, rows)
    align = ["---:" if rows and all(_is_number(r[j]) for r in rows) else "---" for j in range(len(headers))]
    lines = ["| " + " | ".join(str(h).replace("|", "\\|") for h in headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in cells]
    return "\n".join(lines)


class Report:
    """A Markdown report built section by section and written as ``report.md``.

    Figures are referenced by paths relative to the report's folder, so the folder can be
    moved or zipped as a whole.

    Args:
        title: The level-1 heading.

    Example:
        >>> r = Report("Demo")
        >>> r.text("Two moons, 8 labels.")
        >>> r.table(["method", "error"], [["vat", 0.01]])
        >>> print(r.render().splitlines()[0])
        # Demo
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self._parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        """Add a heading.

        Args:
            text: Heading text.
            level: Markdown heading level (2 to 6).

        Raises:
            ValueError: If ``level`` is outside ``[2, 6]``.
        """
        if not 2 <= level <= 6:
            raise ValueError(f"level must be in [2, 6], got {level!r}")
        self._parts.append("#" * level + " " + text)

    def text(self, text: str) -> None:
        """Add a paragraph.

        Args:
            text: Markdown text.
        """
        self._parts.append(text.strip())

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Add a table.

        Args:
            headers: Column names.
            rows: Rows of cells.
        """
        self._parts.append(markdown_table(headers, rows))

    def code(self, text: str, language: str = "") -> None:
        """Add a fenced code block.

        Args:
            text: The code.
            language: Language tag of the fence.
        """
        self._parts.append(f"```{language}\n{text.rstrip()}\n```")

    def figure(self, path: str | os.PathLike[str], caption: str) -> None:
        """Embed a figure.

        Args:
            path: The image, relative to the report's folder (or absolute; it is written
                relative to the folder by :meth:`write` when it lies inside it).
            caption: Alt text and caption.
        """
        self._parts.append(("figure", str(path), caption))  # type: ignore[arg-type]

    def render(self, folder: str | os.PathLike[str] | None = None) -> str:
        """The Markdown text.

        Args:
            folder: The report's folder, used to make figure paths relative.

        Returns:
            The document.
        """
        out = [f"# {self.title}"]
        for part in self._parts:
            if isinstance(part, tuple):
                _, path, caption = part
                p = Path(path)
                if folder is not None and p.is_absolute():
                    try:
                        p = p.relative_to(Path(folder).resolve())
                    except ValueError:
                        pass
                out.append(f"![{caption}]({p.as_posix()})\n\n*{caption}*")
            else:
                out.append(part)
        return "\n\n".join(out) + "\n"

    def write(self, folder: str | os.PathLike[str], name: str = "report.md") -> Path:
        """Write the report into ``folder``.

        Args:
            folder: The report folder (created if missing).
            name: File name.

        Returns:
            The path written.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_text(self.render(folder.resolve()), encoding="utf-8")
        return path
