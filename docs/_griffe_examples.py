"""Griffe extension: reads a Google-style ``Example:`` section as ``Examples:``.

torchvat's docstrings title their doctests ``Example:`` (ruff's pydocstyle accepts both). Griffe's
Google parser takes only the plural as an examples section and would render the doctest lines as
Markdown; this keeps the source as it is and the reference pages as code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Renames each ``Example:`` section header to ``Examples:`` before the docstring is parsed."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the header in ``obj``'s docstring, if it has one."""
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
