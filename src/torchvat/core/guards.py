"""Guards that keep a model exactly as a perturbation search found it.

* :func:`frozen_batchnorm_stats` stops BatchNorm layers from updating their running statistics
  during perturbed passes, while they keep normalizing with batch statistics in train mode; the
  running statistics of InstanceNorm layers and TorchScript modules are put back on exit; spectral
  normalization stops its power iteration, so every pass uses the weight of the last pass before.
* :func:`running_stats_guard` applies it to whatever a loss was given as the model: a module, a
  bound method of one (``model.forward``) or a ``functools.partial`` of either.
* :class:`RNGSnapshot` replays the random number generator state of the clean pass, so that the
  probe and perturbed passes draw the same dropout masks as the clean pass.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.utils.parametrizations import _SpectralNorm
from torch.nn.utils.spectral_norm import SpectralNorm

__all__ = ["RNGSnapshot", "frozen_batchnorm_stats", "guarded_module", "running_stats_guard"]

_RUNNING_BUFFERS = frozenset(("running_mean", "running_var", "num_batches_tracked"))
_SNAPSHOT_TYPES = (_InstanceNorm, torch.jit.ScriptModule)
_SORTED_TYPES = (*_SNAPSHOT_TYPES, _SpectralNorm)  # layers with buffers that need more than the fast path


@contextmanager
def frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """Stop every normalization layer in ``module`` from changing its running statistics.

    Inside the context, BatchNorm layers (all ``_BatchNorm`` subclasses: ``BatchNorm1d/2d/3d``,
    their lazy versions and ``SyncBatchNorm``) that are in train mode still normalize with the
    statistics of the current batch, exactly as in a normal training pass, but leave
    ``running_mean``, ``running_var`` and ``num_batches_tracked`` untouched. Layers in eval mode
    are not affected (they never update). Everything is restored on exit, also after an exception.

    Spectral normalization in train mode stops its power iteration inside the context, so its
    ``u`` and ``v`` vectors stay as found and every pass normalizes the weight exactly as the last
    pass before the context did (a caller's clean pass, say): both
    ``torch.nn.utils.parametrizations.spectral_norm`` (its ``_SpectralNorm`` module is switched to
    eval mode; nothing else reads that flag) and the older hook ``torch.nn.utils.spectral_norm``
    (its weight is computed without the iteration; the host module keeps its training mode).
    Otherwise each perturbed pass would advance ``u`` and ``v``, change the model's state and
    normalize with another weight than the clean pass, and the divergence would not vanish as
    ``eps -> 0``.

    Layers whose updates cannot be switched off are put back on exit instead: InstanceNorm layers
    with ``track_running_stats=True`` (``F.instance_norm`` updates the buffers it is given) and
    every TorchScript submodule in train mode (a compiled ``BatchNorm`` among them) get their
    ``running_mean``, ``running_var`` and ``num_batches_tracked`` copied back. A lazy layer that is
    still uninitialized on entry is left to initialize itself on its first pass (switching its
    updates off would break that); if it was initialized inside the context, its running
    statistics are reset on exit to those of a fresh layer (zeros, ones, 0), as if no pass had
    been counted. Only those layers cost anything beyond the walk over ``module.modules()``.

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
    # One walk. ``m._buffers`` is tested before the isinstance: an empty dict rules out most modules
    # at the cost of an attribute read (an isinstance on ScriptModule goes through its metaclass).
    # Models with plain BatchNorm layers only take the two comprehensions and nothing else.
    # Spectral norm keeps u and v in buffers: of its _SpectralNorm module, or of the host of its hook.
    found = [
        m
        for m in module.modules()
        if (isinstance(m, _BatchNorm) and m.training and m.track_running_stats)
        or (m._buffers and (isinstance(m, _SORTED_TYPES) or (m._forward_pre_hooks and _has_spectral_norm_hook(m))))
    ]
    changed = [m for m in found if isinstance(m, _BatchNorm) and not isinstance(m, LazyModuleMixin)]
    fresh: list[nn.Module] = []
    saved: list[tuple[Tensor, Tensor]] = []  # (buffer, its value on entry)
    stopped: list[nn.Module] = []  # _SpectralNorm modules switched to eval mode
    hooks: list[SpectralNorm] = []  # spectral-norm hooks computing their weight without the iteration
    if len(changed) < len(found):  # lazy, InstanceNorm, TorchScript or spectral-norm layers: one by one
        changed, fresh, saved, stopped, hooks = _sort_out(found)
    for m in changed:
        m.track_running_stats = False
    for layer in stopped:
        layer.training = False
    for hook in hooks:
        # an instance attribute shadowing the class's method (deleted on exit); typed as a plain callable
        hook.compute_weight = _weight_without_power_iteration(hook)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        for m in changed:
            m.track_running_stats = True
        for layer in stopped:
            layer.training = True
        for hook in hooks:
            del hook.compute_weight  # the class's method again
        if saved:
            with torch.no_grad():
                for buffer, value in saved:
                    buffer.copy_(value)
        for lazy in fresh:
            if not _uninitialized(lazy) and isinstance(lazy, _NormBase):
                lazy.reset_running_stats()


def _sort_out(
    found: list[nn.Module],
) -> tuple[list[_BatchNorm], list[nn.Module], list[tuple[Tensor, Tensor]], list[nn.Module], list[SpectralNorm]]:
    """Split the layers :func:`frozen_batchnorm_stats` found by how their state is kept.

    Returns the BatchNorm layers whose updates are switched off, the lazy layers still
    uninitialized (reset on exit if initialized meanwhile), ``(buffer, copy)`` pairs of the
    running buffers to copy back on exit (InstanceNorm and TorchScript layers in train mode), the
    ``_SpectralNorm`` parametrizations in train mode, and the spectral-norm hooks of modules in
    train mode (a hook already stopped by an enclosing context is left to that context).
    """
    changed: list[_BatchNorm] = []
    fresh: list[nn.Module] = []
    saved: list[tuple[Tensor, Tensor]] = []
    stopped: list[nn.Module] = []
    hooks: list[SpectralNorm] = []
    for m in found:
        if isinstance(m, _SpectralNorm):
            if m.training:
                stopped.append(m)
            continue
        if m.training and m._forward_pre_hooks:
            hooks += [
                h
                for h in m._forward_pre_hooks.values()
                if isinstance(h, SpectralNorm) and "compute_weight" not in vars(h)
            ]
        if not isinstance(m, (*_SNAPSHOT_TYPES, _NormBase)):
            continue  # the host of a spectral-norm hook (a Linear, say): no running statistics
        if not m.training or not getattr(m, "track_running_stats", True):
            continue  # a layer in eval mode, or without running statistics, never updates them
        if _uninitialized(m):
            fresh.append(m)  # switching its updates off would break its initialization
        elif isinstance(m, _BatchNorm):
            changed.append(m)
        else:
            saved += [(b, b.clone()) for n, b in m.named_buffers(recurse=False) if n in _RUNNING_BUFFERS]
    return changed, fresh, saved, stopped, hooks


def _has_spectral_norm_hook(m: nn.Module) -> bool:
    """Whether ``m`` has a ``torch.nn.utils.spectral_norm`` forward pre-hook."""
    return any(isinstance(h, SpectralNorm) for h in m._forward_pre_hooks.values())


def _weight_without_power_iteration(hook: SpectralNorm) -> Callable[[nn.Module, bool], Tensor]:
    r"""A ``compute_weight`` for ``hook`` that never runs the power iteration, whatever the host's mode.

    The hook calls ``compute_weight(module, do_power_iteration=module.training)``; this one gives
    :math:`W / (u^\top W v)` with the stored ``u`` and ``v``, the weight the hook's last
    train-mode pass computed (after its own iteration), with the operations ``SpectralNorm`` uses.
    ``u`` and ``v`` are cloned, as torch does after its iteration: a later train-mode pass updates
    them in place, which must not break the backward pass of this one's graph.
    """

    def compute_weight(module: nn.Module, do_power_iteration: bool) -> Tensor:
        weight = getattr(module, hook.name + "_orig")
        u = getattr(module, hook.name + "_u").clone(memory_format=torch.contiguous_format)
        v = getattr(module, hook.name + "_v").clone(memory_format=torch.contiguous_format)
        sigma = torch.dot(u, torch.mv(hook.reshape_weight_to_matrix(weight), v))
        result: Tensor = weight / sigma  # weight is read through getattr (Any)
        return result

    return compute_weight


def _uninitialized(m: nn.Module) -> bool:
    """Whether ``m`` is a lazy module still waiting for its first pass.

    Once initialized, a lazy layer usually becomes its plain class, no longer a ``LazyModuleMixin``.
    """
    return isinstance(m, LazyModuleMixin) and m.has_uninitialized_params()


def guarded_module(model: object) -> nn.Module | None:
    """The module whose running statistics a call of ``model`` updates, if it can be told.

    ``model`` itself if it is an ``nn.Module`` (a TorchScript module included), the module a bound
    method belongs to (``net.forward``), or that found in a ``functools.partial``'s function
    (recursively); ``None`` for any other callable (a lambda, a function), which cannot be looked
    into.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> guarded_module(functools.partial(net.forward)) is net, guarded_module(lambda v: net(v))
        (True, None)
    """
    while not isinstance(model, nn.Module):
        if isinstance(model, functools.partial):
            model = model.func
        elif isinstance(model, types.MethodType) and isinstance(model.__self__, nn.Module):
            return model.__self__
        else:
            return None
    return model


def running_stats_guard(model: object) -> AbstractContextManager[None]:
    """:func:`frozen_batchnorm_stats` for the module behind ``model`` (see :func:`guarded_module`).

    Every loss and perturbation search enters its passes through this guard. For a callable that
    cannot be looked into it does nothing: the running statistics of the layers it calls are not
    protected.
    """
    module = guarded_module(model)
    return contextlib.nullcontext() if module is None else frozen_batchnorm_stats(module)


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
