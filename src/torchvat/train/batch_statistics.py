"""The labeled rows normalized with the statistics of the unlabeled batch (BatchNorm).

With separate clean passes the labeled batch (32 rows by default) and the unlabeled batch (128)
are normalized by BatchNorm with the statistics of their own batches. The cross entropy is then
fitted under one normalization and the VAT term smooths the network under another: the two are
different functions of the same weights, and the running statistics the network is evaluated
with can only follow one of them. Where the two batches' statistics differ (few labels, or a few
rows far out in the unlabeled pool), VAT fell below supervised training (BENCHMARKS.md section 6).

:func:`captured_batch_statistics` records, during a pass, the statistics each BatchNorm layer
normalizes with; :func:`normalized_with` then runs another pass whose BatchNorm layers normalize
with the recorded statistics and leave their running statistics alone. The trainer uses them for
``labeled_stats="unlabeled"``: the unlabeled clean pass normalizes with its own batch's
statistics and updates the running statistics; the labeled pass is normalized with the same
statistics, so the cross entropy, the VAT term and evaluation see one network.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.lazy import LazyModuleMixin

__all__ = ["BatchStatistics", "batch_statistics", "captured_batch_statistics", "normalized_with"]

#: For each recorded layer, the mean and the (biased) variance it normalized its batch with.
BatchStatistics = dict[_BatchNorm, tuple[Tensor, Tensor]]


def batch_statistics(layer: _BatchNorm, input: Tensor) -> tuple[Tensor, Tensor]:
    """The mean and biased variance a train-mode ``layer`` normalizes ``input`` with (no gradient).

    Over every dimension but the channels (1). A layer class with a ``batch_statistics(input)``
    method of its own (:class:`torchvat.models.TrimmedBatchNorm1d`) is asked for them.

    Example:
        >>> m, v = batch_statistics(nn.BatchNorm1d(1), torch.tensor([[0.0], [2.0]]))
        >>> m.tolist(), v.tolist()
        ([1.0], [1.0])
    """
    own = getattr(type(layer), "batch_statistics", None)
    with torch.no_grad():
        if own is not None:
            mean, var = own(layer, input)
            return mean.detach(), var.detach()
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
        and m.running_var is not None
    ]


@contextmanager
def captured_batch_statistics(module: nn.Module) -> Iterator[BatchStatistics]:
    """Record the batch statistics every BatchNorm layer of ``module`` normalizes with in the body.

    The yielded dict is filled as the body's passes run: for each train-mode ``_BatchNorm`` layer
    with running statistics (``SyncBatchNorm`` aside), the mean and biased variance of its input's
    last pass, detached. The passes themselves are unchanged.

    Example:
        >>> bn = nn.BatchNorm1d(1)
        >>> with captured_batch_statistics(bn) as stats:
        ...     _ = bn(torch.tensor([[0.0], [4.0]]))
        >>> [t.tolist() for t in stats[bn]]
        [[2.0], [4.0]]
    """
    stats: BatchStatistics = {}
    handles = [
        layer.register_forward_pre_hook(
            lambda m, args: stats.__setitem__(m, batch_statistics(m, args[0])) if m.training else None
        )
        for layer in _shared_layers(module)
    ]
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def normalized_with(stats: BatchStatistics) -> Iterator[None]:
    """Run the body with each layer of ``stats`` normalizing with its recorded statistics.

    Each such layer is switched to eval mode with its ``running_mean`` and ``running_var``
    replaced by the recorded mean and variance: it normalizes every row with them (gradients flow
    through the input, not through the statistics) and updates nothing. Layers, modes and buffers
    are restored on exit, also after an exception. Layers not in ``stats`` are untouched.

    Example:
        >>> bn = nn.BatchNorm1d(1, affine=False)
        >>> with normalized_with({bn: (torch.tensor([2.0]), torch.tensor([4.0]))}):
        ...     y = bn(torch.tensor([[4.0]]))
        >>> round(float(y), 3), bn.training, bn.running_mean.tolist()
        (1.0, True, [0.0])
    """
    saved = [(layer, layer.training, layer._buffers["running_mean"], layer._buffers["running_var"]) for layer in stats]
    try:
        for layer, (mean, var) in stats.items():
            assert layer.running_mean is not None and layer.running_var is not None
            layer._buffers["running_mean"] = mean.to(layer.running_mean.dtype)
            layer._buffers["running_var"] = var.to(layer.running_var.dtype)
            layer.training = False
        yield
    finally:
        for layer, training, saved_mean, saved_var in saved:
            layer._buffers["running_mean"] = saved_mean
            layer._buffers["running_var"] = saved_var
            layer.training = training
