"""Property-based tests of the losses over random shapes, dtypes and hyperparameters.

No NaN/Inf, no side effects on the model (parameters, gradients, BatchNorm statistics,
training mode) or the input, and perturbations of exactly the requested norm.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from torchvat.core import (
    adversarial_loss,
    adversarial_perturbation,
    categorical_kl,
    entropy_loss,
    l2_normalize,
    vat_loss,
    virtual_adversarial_perturbation,
)

SETTINGS = settings(max_examples=25, deadline=None)

shapes = st.tuples(st.integers(2, 6), st.integers(1, 5), st.integers(2, 5))  # batch, features, classes
dtypes = st.sampled_from([torch.float32, torch.float64])
eps_values = st.floats(1e-3, 10.0)
norms = st.sampled_from(["l2", "linf"])
reductions = st.sampled_from(["none", "mean", "sum"])
seeds = st.integers(0, 2**16)


def _model(n_in: int, n_out: int, dtype: torch.dtype, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, n_out)).to(dtype).train()


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_untouched(model: nn.Module, before: dict[str, torch.Tensor], training: bool) -> None:
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
    assert all(p.grad is None for p in model.parameters())
    assert model.training is training


def _per_row_norm(r: torch.Tensor, norm: str) -> torch.Tensor:
    flat = r.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


@SETTINGS
@given(shape=shapes, dtype=dtypes, eps=eps_values, n_power=st.integers(0, 2), norm=norms, reduction=reductions,
       seed=seeds, scale=st.sampled_from([1.0, 1e-3, 1e3]))  # fmt: skip
def test_vat_loss_finite_nonnegative_and_side_effect_free(shape, dtype, eps, n_power, norm, reduction, seed, scale):
    b, f, c = shape
    model = _model(f, c, dtype, seed)
    x = torch.randn(b, f, dtype=dtype, generator=torch.Generator().manual_seed(seed)) * scale
    x_before, state = x.clone(), _snapshot(model)
    loss = vat_loss(model, x, eps=eps, n_power=n_power, norm=norm, reduction=reduction)
    assert loss.dtype.is_floating_point and bool(torch.isfinite(loss).all())
    assert bool((loss >= -1e-6).all())  # a divergence
    assert loss.shape == ((b,) if reduction == "none" else ())
    assert torch.equal(x, x_before)
    _assert_untouched(model, state, training=True)


@SETTINGS
@given(shape=shapes, dtype=dtypes, eps=eps_values, n_power=st.integers(0, 2), norm=norms, seed=seeds)
def test_virtual_adversarial_perturbation_has_norm_eps(shape, dtype, eps, n_power, norm, seed):
    b, f, c = shape
    model = _model(f, c, dtype, seed).eval()
    x = torch.randn(b, f, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    state = _snapshot(model)
    r = virtual_adversarial_perturbation(model, x, eps=eps, n_power=n_power, norm=norm)
    assert r.shape == x.shape and bool(torch.isfinite(r).all()) and not r.requires_grad
    norms_ = _per_row_norm(r, norm)
    assert torch.allclose(norms_, torch.full_like(norms_, eps), rtol=1e-4, atol=1e-6), (norms_, eps)
    _assert_untouched(model, state, training=False)


@SETTINGS
@given(shape=shapes, dtype=dtypes, eps=eps_values, norm=norms, seed=seeds, reduction=reductions)
def test_adversarial_loss_and_perturbation(shape, dtype, eps, norm, seed, reduction):
    b, f, c = shape
    model = _model(f, c, dtype, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, f, dtype=dtype, generator=g)
    y = torch.randint(0, c, (b,), generator=g)
    state = _snapshot(model)
    loss = adversarial_loss(model, x, y, eps=eps, norm=norm, reduction=reduction)
    assert bool(torch.isfinite(loss).all()) and bool((loss >= 0).all())
    _assert_untouched(model, state, training=True)
    r = adversarial_perturbation(model, x, y, eps=eps, norm=norm)
    norms_ = _per_row_norm(r, norm)
    # a row whose loss gradient vanishes gets no direction (norm 0); every other row has norm eps
    assert bool(((norms_ - eps).abs() <= 1e-4 * eps + 1e-6).logical_or(norms_ == 0).all()), (norms_, eps)
    _assert_untouched(model, state, training=True)


@SETTINGS
@given(shape=shapes, dtype=dtypes, reduction=reductions, seed=seeds, scale=st.sampled_from([1.0, 100.0, 1e4]))
def test_entropy_and_kl_are_finite_at_extreme_logits(shape, dtype, reduction, seed, scale):
    b, _, c = shape
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, dtype=dtype, generator=g) * scale
    other = torch.randn(b, c, dtype=dtype, generator=g) * scale
    logits_before = logits.clone()
    ent = entropy_loss(logits, reduction=reduction)
    assert bool(torch.isfinite(ent).all())
    assert bool((ent >= -1e-6).all()) and bool((ent <= math.log(c) * (b if reduction == "sum" else 1) + 1e-4).all())
    kl = categorical_kl(logits, other)
    assert kl.shape == (b,) and bool(torch.isfinite(kl).all()) and bool((kl >= -1e-5 * scale).all())
    assert float(categorical_kl(logits, logits).abs().max()) <= 1e-6 * scale
    assert torch.equal(logits, logits_before)


@SETTINGS
@given(b=st.integers(1, 5), f=st.integers(1, 6), dtype=dtypes, seed=seeds,
       exponent=st.sampled_from([-30, -10, 0, 10, 30]))  # fmt: skip
def test_l2_normalize_gives_unit_rows(b, f, dtype, seed, exponent):
    v = torch.randn(b, f, dtype=dtype, generator=torch.Generator().manual_seed(seed)) * 10.0**exponent
    u = l2_normalize(v)
    assert bool(torch.isfinite(u).all())
    assert torch.allclose(u.flatten(1).norm(dim=1).double(), torch.ones(b, dtype=torch.float64), atol=1e-5)
    assert torch.equal(l2_normalize(torch.zeros(b, f, dtype=dtype)), torch.zeros(b, f, dtype=u.dtype))
