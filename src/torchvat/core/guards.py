"""Guards that keep a model exactly as a perturbation search found it.

* :func:`frozen_batchnorm_stats` stops BatchNorm layers from updating their running statistics
  during perturbed passes, while they keep normalizing with batch statistics in train mode.
* :class:`RNGSnapshot` replays the random number generator state of the clean pass, so that the
  probe and perturbed passes draw the same dropout masks as the clean pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["RNGSnapshot", "frozen_batchnorm_stats"]


@contextmanager
def frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """Stop every BatchNorm layer in ``module`` from updating its running statistics.

    Inside the context, BatchNorm layers (all ``_BatchNorm`` subclasses: ``BatchNorm1d/2d/3d``,
    their lazy versions and ``SyncBatchNorm``) that are in train mode still normalize with the
    statistics of the current batch, exactly as in a normal training pass, but leave
    ``running_mean``, ``running_var`` and ``num_batches_tracked`` untouched. Layers in eval mode
    are not affected (they never update). Everything is restored on exit, also after an exception.

    Perturbed inputs are not samples of the data distribution: letting them into the running
    statistics shifts the statistics the model is evaluated with, a common defect of VAT code.

    Args:
        module: any module; the context walks ``module.modules()`` once.

    Example:
        >>> bn = nn.BatchNorm1d(3).train()
        >>> with frozen_batchnorm_stats(bn):
        ...     _ = bn(torch.randn(8, 3) + 5)
        >>> bn.running_mean.tolist(), int(bn.num_batches_tracked)
        ([0.0, 0.0, 0.0], 0)
    """
    changed = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    for m in changed:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in changed:
            m.track_running_stats = True


class RNGSnapshot:
    """A captured state of the CPU generator and of the accelerator's generator.

    Capture it just before a clean forward pass; :meth:`replay` then runs any later pass with the
    same random draws, so dropout (and any other sampling in the model) uses the same masks in the
    clean, probe and perturbed passes of VAT. Without this the divergence at ``r -> 0`` is not 0
    and the power iteration measures mask noise instead of curvature.

    Example:
        >>> snap = RNGSnapshot.capture()
        >>> a = torch.rand(2)
        >>> with snap.replay():
        ...     b = torch.rand(2)
        >>> torch.equal(a, b)
        True
    """

    __slots__ = ("cpu", "device", "device_state")

    def __init__(self, cpu: torch.Tensor, device: torch.device, device_state: torch.Tensor | None) -> None:
        self.cpu = cpu
        self.device = device
        self.device_state = device_state

    @classmethod
    def capture(cls, device: torch.device | str | None = None) -> RNGSnapshot:
        """Capture the CPU generator and, for a CUDA or MPS ``device``, that device's generator."""
        dev = torch.device(device) if device is not None else torch.device("cpu")
        return cls(torch.get_rng_state(), dev, _get_device_state(dev))

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Run the body with the captured generator states; restore the states found on entry."""
        saved_cpu = torch.get_rng_state()
        saved_dev = _get_device_state(self.device)
        torch.set_rng_state(self.cpu)
        _set_device_state(self.device, self.device_state)
        try:
            yield
        finally:
            torch.set_rng_state(saved_cpu)
            _set_device_state(self.device, saved_dev)


def _get_device_state(device: torch.device) -> torch.Tensor | None:
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return torch.mps.get_rng_state()
    return None


def _set_device_state(device: torch.device, state: torch.Tensor | None) -> None:
    if state is None:
        return
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    elif device.type == "mps":
        torch.mps.set_rng_state(state)
