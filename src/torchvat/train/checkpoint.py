"""Atomic checkpoint files and the random-generator state they carry."""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "get_rng_state",
    "load_checkpoint",
    "save_checkpoint",
    "seed_everything",
    "select_device",
    "set_rng_state",
]


def select_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve a device name; ``"auto"`` picks CUDA, then MPS, then CPU.

    Args:
        device: ``"auto"``, a device string such as ``"cuda:1"``, or a ``torch.device``.

    Returns:
        The device.

    Raises:
        ValueError: If the string is not a valid device.

    Example:
        >>> select_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto' or a torch device string, got {device!r}") from err


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's (CPU and every accelerator's) generators.

    Args:
        seed: The seed (>= 0).

    Example:
        >>> seed_everything(3); a = torch.rand(1)
        >>> seed_everything(3); torch.equal(a, torch.rand(1))
        True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global generator is what users call
    torch.manual_seed(seed)


def get_rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Capture the global generators as tensors and plain containers.

    Args:
        device: The training device; its accelerator generator is included.

    Returns:
        A dict safe for ``torch.load(..., weights_only=True)``.
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "device_type": "cpu" if device is None else device.type,
        "device": None,
    }
    if device is not None and device.type == "cuda":
        state["device"] = torch.cuda.get_rng_state(device)
    elif device is not None and device.type == "mps":
        state["device"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore generators captured by :func:`get_rng_state`.

    The accelerator generator is restored only when ``device`` has the saved type.

    Args:
        state: The captured state.
        device: The training device.
    """
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))  # noqa: NPY002
    saved = state.get("device")
    if saved is None or device is None or device.type != state.get("device_type"):
        return
    if device.type == "cuda":
        torch.cuda.set_rng_state(saved.cpu(), device)
    elif device.type == "mps":
        torch.mps.set_rng_state(saved.cpu())


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically.

    The state is written to a temporary file in the same directory, flushed and
    ``fsync``-ed, then moved over ``path`` with ``os.replace``: a crash or an error
    mid-write leaves the previous file at ``path`` intact and no temporary file behind.

    Args:
        state: Tensors and plain containers (loadable with ``weights_only=True``).
        path: Destination file; its directory is created if needed.

    Returns:
        The destination path.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> p = save_checkpoint({"w": torch.ones(2), "step": 3}, os.path.join(d, "c.pt"))
        >>> load_checkpoint(p)["step"]
        3
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(..., weights_only=True)``.

    Args:
        path: The file.
        map_location: Where tensors are loaded (default CPU).

    Returns:
        The saved state.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    return torch.load(path, map_location=map_location, weights_only=True)
