"""The devices a run can train on, checked before anything is loaded or written."""

from __future__ import annotations

import torch

from torchvat.runs.errors import UsageError

__all__ = ["available_devices", "check_device"]


def available_devices() -> list[str]:
    """The devices this machine can train on, as ``--device`` spells them.

    Returns:
        ``auto``, ``cpu`` and each CUDA device (``cuda:0``, ...) and ``mps`` that is available.

    Example:
        >>> available_devices()[:2]
        ['auto', 'cpu']
    """
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def check_device(device: str | torch.device) -> None:
    """Refuse a training device this machine does not have, before anything is loaded or written.

    Args:
        device: ``"auto"`` or a device string (``--device``).

    Raises:
        UsageError: For a device string torch does not parse, or a device that is not available here
            (one line naming the devices there are).

    Example:
        >>> check_device("cpu")
    """
    if isinstance(device, str) and device == "auto":
        return
    there = f"devices here: {', '.join(available_devices())}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device must be a device such as cpu or cuda:0, got {device!r}; {there}") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine; {there}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s); {there}")
        return
    backend = getattr(torch.backends, dev.type, None) or getattr(torch, dev.type, None)
    is_available = getattr(backend, "is_available", None)
    if callable(is_available) and not is_available():
        raise UsageError(f"--device {device}: {dev.type} is not available on this machine; {there}")
