"""Where torchvat looks for dataset files."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV_VAR", "default_data_root"]

DATA_ENV_VAR = "TORCHVAT_DATA"
"""Environment variable naming a directory that holds datasets."""


def default_data_root() -> Path:
    """The default dataset directory: ``$TORCHVAT_DATA``, else ``~/.cache/torchvat/data``.

    Returns:
        The directory (it may not exist).

    Example:
        >>> isinstance(default_data_root(), Path)
        True
    """
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/torchvat/data").expanduser()
