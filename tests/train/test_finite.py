"""The device-side guards of the non-finite check: gradient flags and the buffer snapshot."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchvat.train.finite import BufferSnapshot, grad_finite_flags

NAN, INF = float("nan"), float("inf")


def _grads() -> list[torch.Tensor | None]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(3, 4, generator=g),
        None,
        torch.randn(5, generator=g),
        torch.empty(0),
        torch.randn(2, 2, dtype=torch.float64, generator=g),
        torch.randn(6, generator=g).to(torch.bfloat16),
        torch.randn(4, generator=g).to(torch.float16),
    ]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_flags_mark_exactly_the_non_finite_gradients(foreach, bad):
    grads = _grads()
    assert grad_finite_flags(grads, foreach=foreach).tolist() == [True] * len(grads)
    for i in (0, 4, 5, 6):
        broken = list(grads)
        broken[i] = broken[i].clone().flatten().index_fill(0, torch.tensor([1]), bad).view_as(grads[i])
        expected = [j != i for j in range(len(grads))]
        assert grad_finite_flags(broken, foreach=foreach).tolist() == expected


def test_flags_of_the_foreach_and_per_tensor_paths_agree_on_large_half_precision_gradients():
    # 60000 * 8 entries overflow a float16 sum, not the float32 accumulation both paths use
    grads = [torch.full((8,), 60000.0, dtype=torch.float16), torch.full((3,), -6e4, dtype=torch.float16)]
    assert grad_finite_flags(grads, foreach=False).tolist() == [True, True]
    assert grad_finite_flags(grads, foreach=True).tolist() == [True, True]


def test_flags_handle_sparse_gradients_and_all_none():
    sparse = torch.sparse_coo_tensor([[0, 2]], [1.0, NAN], (4,), check_invariants=True)
    assert grad_finite_flags([sparse, torch.ones(2)], foreach=True).tolist() == [False, True]
    assert grad_finite_flags([None, None]).tolist() == [True, True]


class _Buffers(nn.Module):
    """BatchNorm plus buffers of every rank and two dtypes."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.register_buffer("table", torch.arange(6.0).view(2, 3))
        self.register_buffer("count", torch.tensor(7, dtype=torch.int32))
        self.register_buffer("scale", torch.ones(4, dtype=torch.float16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.table.mul_(NAN)
            self.count.add_(1)
            self.scale.fill_(INF)
        return self.bn(x)


def _state(m: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for b in m.buffers()]


def test_snapshot_restores_every_buffer_bitwise_when_the_step_failed():
    m = _Buffers().train()
    m(torch.randn(8, 3))  # non-trivial running statistics first
    m.table.copy_(torch.arange(6.0).view(2, 3))
    m.scale.fill_(1.0)
    before = _state(m)
    snap = BufferSnapshot(list(m.buffers()))
    m(torch.randn(8, 3) * 5 + 2)
    assert not torch.equal(m.bn.running_mean, before[0])
    snap.restore(torch.tensor(False))
    after = _state(m)
    for a, b in zip(after, before, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def test_snapshot_keeps_the_new_values_when_the_step_succeeded():
    m = _Buffers().train()
    snap = BufferSnapshot(list(m.buffers()))
    m(torch.randn(8, 3))
    expected = _state(m)
    snap.restore(torch.tensor(True))
    after = _state(m)
    assert all(torch.equal(a, b) or (a.isnan().all() and b.isnan().all()) for a, b in zip(after, expected, strict=True))
    assert int(m.count) == 8 and int(m.bn.num_batches_tracked) == 1


def test_snapshot_writes_into_the_live_buffers_and_handles_none():
    m = nn.BatchNorm2d(2).train().to(memory_format=torch.channels_last)
    ids = [id(b) for b in m.buffers()]
    snap = BufferSnapshot(list(m.buffers()))
    m(torch.randn(4, 2, 3, 3))
    snap.restore(torch.tensor(False))
    assert [id(b) for b in m.buffers()] == ids
    assert m.running_mean.abs().sum() == 0 and int(m.num_batches_tracked) == 0
    BufferSnapshot([]).restore(torch.tensor(False))  # a model without buffers


class _Replacing(nn.Module):
    """Replaces its buffer on every call instead of updating it in place."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("steps", torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.steps = self.steps + 1
        return x


@pytest.mark.parametrize("ok", [False, True])
def test_snapshot_restores_a_buffer_the_module_replaced(ok):
    m = _Replacing()
    snap = BufferSnapshot(list(m.buffers()))
    m(torch.ones(1))
    snap.restore(torch.tensor(ok), list(m.buffers()))
    assert m.steps.tolist() == ([1.0] * 3 if ok else [0.0] * 3)


def test_record_keeps_the_failed_terms_by_name_when_later_iterations_return_other_terms():
    from torchvat.train.finite import NonFiniteRecord

    rec = NonFiniteRecord(torch.device("cpu"), ["w"])
    good, bad = torch.tensor(True), torch.tensor(False)
    flags = torch.tensor([True])
    rec.record(1, good, {"ce": torch.tensor(0.5)}, torch.tensor(0.5), flags)
    rec.record(2, bad, {"ce": torch.tensor(0.7), "l2": torch.tensor(float("nan"))}, torch.tensor(float("nan")), flags)
    rec.record(3, good, {"ce": torch.tensor(0.9)}, torch.tensor(0.9), flags)
    rec.record(4, bad, {"ce": torch.tensor(0.1), "l2": torch.tensor(0.2)}, torch.tensor(0.3), torch.tensor([False]))
    summary = rec.read()
    assert (summary.count, summary.first, summary.loss_finite, summary.bad_parameters) == (2, 2, False, [])
    assert summary.terms["ce"] == pytest.approx(0.7) and list(summary.terms) == ["ce", "l2"]
    assert summary.terms["l2"] != summary.terms["l2"]  # NaN
    assert rec.read() is None
    # after a read, the first failure of a set of names seen before is recorded as well
    rec.record(5, good, {"ce": torch.tensor(0.5), "l2": torch.tensor(0.1)}, torch.tensor(0.6), flags)
    rec.record(6, bad, {"ce": torch.tensor(float("inf"))}, torch.tensor(float("inf")), flags)
    summary = rec.read()
    assert (summary.first, summary.terms) == (6, {"ce": float("inf")})
