"""MkDocs hook: replaces ``<!-- torchvat-help: SUBCOMMAND -->`` with that subcommand's ``--help`` text.

The command-line page then always shows the parser the installed package builds, never a copy.
"""

from __future__ import annotations

import contextlib
import io
import re
from typing import Any

_MARKER = re.compile(r"<!-- torchvat-help:\s*([a-z-]*)\s*-->")


def _help(subcommand: str) -> str:
    from torchvat.cli.main import main

    out = io.StringIO()
    argv = [subcommand, "--help"] if subcommand else ["--help"]
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(argv)
    text = out.getvalue().strip()
    if not text:
        raise RuntimeError(f"'torchvat {subcommand} --help' printed nothing")
    return f"```text\n{text}\n```"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Insert the help text for each marker on the page."""
    return _MARKER.sub(lambda m: _help(m.group(1)), markdown)
