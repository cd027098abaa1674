"""The errors of a run's configuration and data."""

from __future__ import annotations

__all__ = ["DataNotFoundError", "UsageError"]


class UsageError(ValueError):
    """A mistake in a run's configuration or arguments, found before anything is written.

    A :class:`ValueError`; its message names the option as the command line spells it
    (``torchvat`` prints it as one line and exits with code 2).
    """


class DataNotFoundError(FileNotFoundError):
    """A file or folder of the data is missing (a :class:`FileNotFoundError`; the message has the path).

    The command line adds how to get the data.
    """
