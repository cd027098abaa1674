"""Entry point of the ``torchvat`` command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torchvat


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser."""
    parser = argparse.ArgumentParser(prog="torchvat", description=__doc__)
    parser.add_argument("--version", action="version", version=f"torchvat {torchvat.__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit code."""
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0
