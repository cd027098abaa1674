"""The labeled rows normalized with the statistics of the unlabeled batch (BatchNorm).

With separate clean passes the labeled batch (32 rows by default) and the unlabeled batch (128)
are normalized by BatchNorm with the statistics of their own batches. The cross entropy is then
fitted under one normalization and the VAT term smooths the network under another: the two are
different functions of the same weights, and the running statistics the network is evaluated
with follow only one of them.

:func:`captured_batch_statistics` records, during a pass, the statistics each BatchNorm layer
normalizes with, as tensors of that pass's graph; :func:`normalized_with` then runs another pass
whose BatchNorm layers normalize with the recorded statistics, so that pass's loss reaches the
weights through them too (through the rows they were taken over), as it would in a joint pass,
and update nothing. The trainer uses them for ``labeled_stats="unlabeled"``: the unlabeled clean
pass normalizes with its own batch's statistics and updates the running statistics; the labeled
pass is normalized with the same statistics, so the cross entropy, the VAT term and evaluation
see one network. With the statistics detached (the labeled rows normalized as in eval mode) the
same layout lost 6 to 11 points on four of five estimator columns (BENCHMARKS.md section 6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.lazy import LazyModuleMixin

__all__ = [
    "BatchStatistics",
    "batch_statistics",
    "captured_batch_statistics",
    "has_shared_statistics",
    "normalized_with",
]

#: For each recorded layer, the mean and the (biased) variance it normalized its batch with.
BatchStatistics = dict[_BatchNorm, tuple[Tensor, Tensor]]


def batch_statistics(layer: _BatchNorm, input: Tensor) -> tuple[Tensor, Tensor]:
    """The mean and biased variance a train-mode ``layer`` normalizes ``input`` with, with their graph.

    Over every dimension but the channels (1), in float32 at least. A layer class with a
    ``batch_statistics(input)`` method of its own (:class:`torchvat.models.TrimmedBatchNorm1d`)
    is asked for them.

    Example:
        >>> m, v = batch_statistics(nn.BatchNorm1d(1), torch.tensor([[0.0], [2.0]]))
        >>> m.tolist(), v.tolist()
        ([1.0], [1.0])
    """
    own = getattr(type(layer), "batch_statistics", None)
    if own is not None:
        mean, var = own(layer, input)
        return mean, var
    x = input if input.dtype in (torch.float32, torch.float64) else input.float()
    dims = [0, *range(2, x.dim())]
    return x.mean(dims), x.var(dims, unbiased=False)


def _shared_layers(module: nn.Module) -> list[_BatchNorm]:
    """The layers whose statistics can be shared: train-mode ``_BatchNorm`` with running statistics.

    ``SyncBatchNorm`` is left out (its statistics span every process, which one process's input
    does not show), and so are lazy layers that are not initialized yet.
    """
    return [
        m
        for m in module.modules()
        if isinstance(m, _BatchNorm)
        and not isinstance(m, nn.SyncBatchNorm)
        and not (isinstance(m, LazyModuleMixin) and m.has_uninitialized_params())
        and m.training
        and m.track_running_stats
        and m.running_mean is not None
    ]


def has_shared_statistics(module: nn.Module) -> bool:
    """Whether ``module`` has a layer whose statistics :func:`captured_batch_statistics` records.

    Example:
        >>> has_shared_statistics(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
        True
        >>> has_shared_statistics(nn.Linear(2, 2))
        False
    """
    return bool(_shared_layers(module))


@contextmanager
def captured_batch_statistics(module: nn.Module) -> Iterator[BatchStatistics]:
    """Record the batch statistics every BatchNorm layer of ``module`` normalizes with in the body.

    The yielded dict is filled as the body's passes run: for each train-mode ``_BatchNorm`` layer
    with running statistics (``SyncBatchNorm`` aside), the mean and biased variance of its input's
    last pass, computed again from that input, with its graph when the pass has one. The passes
    themselves are unchanged.

    Example:
        >>> bn = nn.BatchNorm1d(1)
        >>> with captured_batch_statistics(bn) as stats:
        ...     _ = bn(torch.tensor([[0.0], [4.0]]))
        >>> [t.tolist() for t in stats[bn]]
        [[2.0], [4.0]]
    """
    stats: BatchStatistics = {}

    def record(layer: nn.Module, args: tuple[Tensor, ...]) -> None:
        assert isinstance(layer, _BatchNorm)
        if layer.training:
            stats[layer] = batch_statistics(layer, args[0])

    handles = [layer.register_forward_pre_hook(record) for layer in _shared_layers(module)]
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()


def _normalize(layer: _BatchNorm, mean: Tensor, var: Tensor, input: Tensor) -> Tensor:
    """``input`` normalized by ``layer`` with ``mean`` and ``var`` (differentiable in all three)."""
    shape = [1, -1] + [1] * (input.dim() - 2)
    x = input if input.dtype in (torch.float32, torch.float64) else input.float()
    out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + layer.eps)
    if layer.affine:
        out = out * layer.weight.view(shape) + layer.bias.view(shape)
    return out.to(input.dtype)


def _fixed(layer: _BatchNorm, mean: Tensor, var: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda input: _normalize(layer, mean, var, input)


@contextmanager
def normalized_with(stats: BatchStatistics) -> Iterator[None]:
    """Run the body with each layer of ``stats`` normalizing with its recorded statistics.

    Each such layer normalizes every row with the recorded mean and variance and its own affine
    parameters; gradients flow through the input, the parameters and the statistics (to the pass
    they were recorded in). It updates no running statistic. The layers' own ``forward`` is
    restored on exit, also after an exception. Layers not in ``stats`` are untouched.

    Example:
        >>> bn = nn.BatchNorm1d(1, affine=False)
        >>> with normalized_with({bn: (torch.tensor([2.0]), torch.tensor([4.0]))}):
        ...     y = bn(torch.tensor([[4.0]]))
        >>> round(float(y), 3), bn.training, bn.running_mean.tolist()
        (1.0, True, [0.0])
    """
    try:
        for layer, (mean, var) in stats.items():
            # an instance attribute shadows the class's forward for this layer only
            layer.__dict__["forward"] = _fixed(layer, mean, var)
        yield
    finally:
        for layer in stats:
            layer.__dict__.pop("forward", None)
