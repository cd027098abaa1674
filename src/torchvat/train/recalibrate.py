"""BatchNorm statistics re-estimated for evaluation, as the VAT authors do after training.

The running averages that BatchNorm keeps during training (momentum 0.1, or 0.01 in the
convolutional networks) lag the weights. The VAT authors re-estimate them before testing:

* takerum/vat_tf ``test.py`` (lines 18-19, 31-35, 74-76): 100 batches of 100 labeled training images
  passed in training mode, the statistics averaged over them;
* takerum/vat (ICLR 2016) ``train_mnist_semisup.py`` (lines 207-210): one pass over the whole
  unlabeled set with a cumulative average.

:func:`recalibrate_batchnorm` computes such statistics with PyTorch's cumulative average
(``momentum=None``: after ``k`` batches the running mean is the mean of the ``k`` batch means, and the
running variance the mean of their unbiased variances) and hands them back, leaving the module's own
statistics, momenta and modes as they were. :func:`swapped_buffers` puts them in place for an
evaluation and restores the training statistics after it, so evaluating never changes training.
:func:`recalibration_batches` draws the fixed batches from a private, seeded generator: the trainer's
batch streams and random generators are not touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["batchnorm_layers", "recalibrate_batchnorm", "recalibration_batches", "swapped_buffers"]


def batchnorm_layers(module: nn.Module) -> dict[str, _BatchNorm]:
    """The BatchNorm layers of ``module`` that keep running statistics, by their qualified name.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.BatchNorm1d(3, track_running_stats=False))
        >>> list(batchnorm_layers(model))
        ['1']
    """
    return {
        name: m
        for name, m in module.named_modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None
    }


def _stat_buffers(module: nn.Module) -> dict[str, Tensor]:
    """The running statistics of the layers of :func:`batchnorm_layers`, by their ``state_dict`` key."""
    out: dict[str, Tensor] = {}
    for name, layer in batchnorm_layers(module).items():
        prefix = f"{name}." if name else ""
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            buffer = getattr(layer, key)
            if buffer is not None:
                out[prefix + key] = buffer
    return out


@contextlib.contextmanager
def swapped_buffers(module: nn.Module, values: Mapping[str, Tensor]) -> Iterator[None]:
    """Put ``values`` into ``module``'s buffers of the same names, and the old values back after.

    The buffers are copied in place (``copy_``), so a compiled module or a CUDA graph that holds
    them keeps reading the same memory.

    Args:
        module: The module.
        values: Buffer values by their ``state_dict`` key (as :func:`recalibrate_batchnorm` returns).

    Raises:
        KeyError: If a key is not a buffer of ``module``.

    Example:
        >>> bn = nn.BatchNorm1d(2)
        >>> with swapped_buffers(bn, {"running_mean": torch.ones(2)}):
        ...     bn.running_mean.tolist()
        [1.0, 1.0]
        >>> bn.running_mean.tolist()
        [0.0, 0.0]
    """
    buffers = dict(module.named_buffers())
    targets = {key: buffers[key] for key in values}
    saved = {key: b.detach().clone() for key, b in targets.items()}
    try:
        with torch.no_grad():
            for key, b in targets.items():
                b.copy_(values[key])
        yield
    finally:
        with torch.no_grad():
            for key, b in targets.items():
                b.copy_(saved[key])


def recalibration_batches(n: int, batches: int | None, batch_size: int, seed: int) -> list[Tensor]:
    """Row indices of the fixed batches a recalibration passes, from a private seeded generator.

    Args:
        n: Rows in the split.
        batches: How many batches (rows drawn by successive random permutations of the split,
            so a split smaller than ``batches * batch_size`` is cycled), or ``None``: one pass
            over a permutation of the split (the last batch may be smaller).
        batch_size: Rows per batch.
        seed: Seed of the private generator (the same seed gives the same batches).

    Returns:
        One int64 CPU tensor of indices per batch.

    Example:
        >>> [b.tolist() for b in recalibration_batches(5, None, 2, seed=0)][-1].__len__()
        1
        >>> len(recalibration_batches(5, 4, 3, seed=0))
        4
    """
    generator = torch.Generator().manual_seed(seed)
    if batches is None:
        return list(torch.randperm(n, generator=generator).split(batch_size))
    need = batches * batch_size
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(-(-need // n))])[:need]
    return list(order.split(batch_size))


def recalibrate_batchnorm(
    module: nn.Module,
    batches: Iterable[Tensor],
    *,
    seed: int,
    forward: Callable[[Tensor], object] | None = None,
    context: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> dict[str, Tensor]:
    """BatchNorm statistics of ``module`` re-estimated on ``batches`` with a cumulative average.

    Every layer of :func:`batchnorm_layers` has its statistics reset and its momentum set to
    ``None`` (PyTorch's cumulative moving average); the batches pass in training mode (dropout
    on, as the authors' code runs them), without gradients, with the global random generators
    seeded with ``seed`` inside :func:`torch.random.fork_rng` (the caller's random streams are
    untouched, and the same seed gives the same dropout masks). The new statistics are returned;
    the module's own statistics, momenta and train/eval modes are restored.

    Args:
        module: The model (a plain module, not a DDP wrapper).
        batches: The input batches, on the module's device.
        seed: Seed of the dropout masks drawn during the passes.
        forward: The function that runs a batch (default: ``module`` itself).
        context: A context manager factory entered around each pass (the trainer's autocast).

    Returns:
        The re-estimated ``running_mean``, ``running_var`` and ``num_batches_tracked`` by their
        ``state_dict`` key (empty for a module without BatchNorm statistics).

    Example:
        >>> bn = nn.BatchNorm1d(1, momentum=0.5)
        >>> stats = recalibrate_batchnorm(bn, [torch.tensor([[0.0], [2.0]]), torch.tensor([[4.0], [6.0]])], seed=0)
        >>> stats["running_mean"].tolist(), stats["running_var"].tolist(), bn.running_mean.tolist()
        ([3.0], [2.0], [0.0])
    """
    layers = batchnorm_layers(module)
    if not layers:
        return {}
    run = module if forward is None else forward
    stats = _stat_buffers(module)
    saved = {key: b.detach().clone() for key, b in stats.items()}
    momenta = {name: layer.momentum for name, layer in layers.items()}
    modes = {m: m.training for m in module.modules()}
    device = next(iter(stats.values())).device
    cuda = [device] if device.type == "cuda" else []
    try:
        for layer in layers.values():
            layer.reset_running_stats()
            layer.momentum = None
        module.train()
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            torch.manual_seed(seed)
            for x in batches:
                with context():
                    run(x)
        return {key: b.detach().clone() for key, b in stats.items()}
    finally:
        with torch.no_grad():
            for key, b in stats.items():
                b.copy_(saved[key])
        for name, layer in layers.items():
            layer.momentum = momenta[name]
        for m, mode in modes.items():
            m.training = mode
