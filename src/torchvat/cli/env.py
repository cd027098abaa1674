"""``torchvat env``: versions and devices, to paste into a bug report."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
from typing import Any

import torch

import torchvat
from torchvat.cli._common import add_common_options

__all__ = ["OPTIONAL_PACKAGES", "add_parser", "collect_env", "env_command", "format_env"]

#: Packages reported when installed (the optional extras and the test tools).
OPTIONAL_PACKAGES = ("torchvision", "tensorboard", "transformers", "lightning", "scikit-learn", "matplotlib", "tqdm")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect_env() -> dict[str, Any]:
    """Versions of torchvat, Python, PyTorch, NumPy and the optional packages, and the devices.

    Returns:
        A dict with ``versions`` (name to version or ``None``), ``devices`` (descriptions),
        ``platform`` and ``threads``.

    Example:
        >>> info = collect_env()
        >>> info["versions"]["torchvat"] == torchvat.__version__
        True
    """
    import numpy as np

    versions: dict[str, str | None] = {
        "torchvat": torchvat.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    versions.update({name: _version(name) for name in OPTIONAL_PACKAGES})
    devices = ["cpu"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append(f"cuda:{i} {props.name} ({props.total_memory / 2**30:.0f} GiB)")
        devices.append(f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return {
        "versions": versions,
        "devices": devices,
        "platform": f"{platform.platform()} ({sys.executable})",
        "threads": torch.get_num_threads(),
    }


def format_env(info: dict[str, Any]) -> str:
    """Render :func:`collect_env`'s dict as aligned lines.

    Args:
        info: The collected information.

    Returns:
        The text.
    """
    lines = [f"{name:<14} {version or 'not installed'}" for name, version in info["versions"].items()]
    lines.append(f"{'devices':<14} {', '.join(info['devices'])}")
    lines.append(f"{'torch threads':<14} {info['threads']}")
    lines.append(f"{'platform':<14} {info['platform']}")
    return "\n".join(lines)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``env`` subcommand.

    Args:
        subparsers: The object ``ArgumentParser.add_subparsers`` returned.

    Returns:
        The subcommand's parser.
    """
    p = subparsers.add_parser(
        "env", help="print versions and devices (for bug reports)", description=(__doc__ or "").replace("``", "")
    )
    add_common_options(p)
    p.set_defaults(command=env_command)
    return p


def env_command(args: argparse.Namespace) -> int:
    """Print the environment.

    Args:
        args: The parsed arguments.

    Returns:
        0.
    """
    print(format_env(collect_env()))
    return 0
