"""The ``torchvat`` command line."""

from torchvat.cli.main import main

__all__ = ["main"]
