"""Entropy minimization and the divergences."""

import math
import re

import pytest
import torch

from torchvat import EntropyLoss, entropy_loss
from torchvat.core import bernoulli_kl, categorical_kl, fisher_product, gaussian_divergence


def test_entropy_values():
    assert math.isclose(entropy_loss(torch.zeros(3, 5)).item(), math.log(5), rel_tol=1e-6)
    p = torch.tensor([0.7, 0.2, 0.1])
    by_hand = -(p * p.log()).sum().item()
    assert math.isclose(entropy_loss(p.log().unsqueeze(0)).item(), by_hand, rel_tol=1e-5)
    assert math.isclose(entropy_loss(torch.zeros(1, 2), likelihood="bernoulli").item(), 2 * math.log(2), rel_tol=1e-6)
    assert entropy_loss(torch.tensor([[100.0, -100.0]])).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_entropy_function_equals_module_and_shapes(reduction):
    z = torch.randn(4, 3, 2, 2)
    f = entropy_loss(z, reduction=reduction)
    assert torch.equal(f, EntropyLoss(reduction=reduction)(z))
    assert f.shape == ((4,) if reduction == "none" else ())


def test_entropy_errors():
    with pytest.raises(ValueError, match=r"likelihood must be one of 'categorical', 'bernoulli', got 'gaussian'"):
        entropy_loss(torch.zeros(2, 2), likelihood="gaussian")
    with pytest.raises(
        TypeError, match=r"logits must be a floating-point tensor of shape \[B, C, ...\], got torch.int64"
    ):
        entropy_loss(torch.zeros(2, 2, dtype=torch.long))


@pytest.mark.parametrize("fn", [categorical_kl, bernoulli_kl, gaussian_divergence])
def test_divergences_gradcheck_and_zero_at_equality(fn):
    a = torch.randn(3, 4, dtype=torch.float64)
    b = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: fn(a, v), (b,))
    assert torch.allclose(fn(a, a), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert bool((fn(a, b.detach()) > 0).all())


def test_entropy_gradcheck():
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: entropy_loss(v, reduction="none"), (z,))


@pytest.mark.parametrize(
    ("likelihood", "fn"),
    [("categorical", categorical_kl), ("bernoulli", bernoulli_kl), ("gaussian", gaussian_divergence)],
)
def test_fisher_product_is_the_output_hessian(likelihood, fn):
    clean = torch.randn(1, 4, dtype=torch.float64)
    v = torch.randn(1, 4, dtype=torch.float64)
    hess = torch.autograd.functional.hessian(lambda z: fn(clean, z.view(1, 4)).sum(), clean.view(4).clone())
    expected = (hess @ v.view(4)).view(1, 4)
    assert torch.allclose(fisher_product(likelihood, None, clean, v), expected, atol=1e-10)
    assert torch.allclose(fisher_product(likelihood, fn, clean, v), expected, atol=1e-10)  # generic path


def test_stable_at_extreme_logits():
    big = torch.tensor([[100.0, -100.0, 0.0]])
    for fn in (categorical_kl, bernoulli_kl):
        assert torch.isfinite(fn(big, -big)).all() and torch.isfinite(fn(-big, big)).all()


@pytest.mark.parametrize("fn", [bernoulli_kl, gaussian_divergence])
def test_one_value_per_sample_outputs(fn):
    a, b = torch.randn(5), torch.randn(5)  # [B]: a binary classifier's logit, a scalar regression
    torch.testing.assert_close(fn(a, b), fn(a.unsqueeze(1), b.unsqueeze(1)))
    with pytest.raises(ValueError, match=r"needs clean of shape \[B, \.\.\.\], got shape \(\)"):
        fn(torch.tensor(0.0), torch.tensor(1.0))


def test_categorical_needs_a_class_dimension():
    with pytest.raises(ValueError, match=r"categorical_kl .*needs clean of shape \[B, C, \.\.\.\], got shape \(5,\)"):
        categorical_kl(torch.randn(5), torch.randn(5))
    with pytest.raises(ValueError, match=r"needs perturbed of shape \[B, C, \.\.\.\], got shape \(5,\)"):
        categorical_kl(torch.randn(5, 2), torch.randn(5))
    with pytest.raises(ValueError, match=r"needs clean of shape \[B, C, \.\.\.\], got shape \(5,\)"):
        fisher_product("categorical", None, torch.randn(5), torch.randn(5))
    torch.testing.assert_close(fisher_product("bernoulli", None, torch.zeros(5), torch.ones(5)), torch.full((5,), 0.25))


def test_entropy_of_one_logit_per_sample():
    z = torch.randn(5)
    torch.testing.assert_close(
        entropy_loss(z, likelihood="bernoulli", reduction="none"),
        entropy_loss(z.unsqueeze(1), likelihood="bernoulli", reduction="none"),
    )
    with pytest.raises(
        ValueError, match=r"logits must have shape \[B, C, \.\.\.\] for likelihood='categorical', got shape \(5,\)"
    ):
        entropy_loss(z)
    with pytest.raises(
        ValueError, match=r"logits must have shape \[B, \.\.\.\] for likelihood='bernoulli', got shape \(\)"
    ):
        entropy_loss(torch.tensor(0.0), likelihood="bernoulli")


_ONE_CLASS = (
    r"needs {} of shape \[B, C, \.\.\.\], got shape {} \(softmax over dim 1 needs a class dimension of size 2 or "
    r"more; for one logit per sample use likelihood='bernoulli'\)$"
)


@pytest.mark.parametrize("shape", [(5, 1), (5, 1, 2, 2)])
def test_one_class_is_not_categorical(shape):
    # softmax over one class is 1: the divergence and the entropy would be 0 for every input, silently
    z, got = torch.randn(shape), re.escape(str(shape))
    with pytest.raises(
        ValueError, match=r"^categorical_kl \(likelihood='categorical'\) " + _ONE_CLASS.format("clean", got)
    ):
        categorical_kl(z, torch.randn(shape))
    with pytest.raises(ValueError, match=_ONE_CLASS.format("perturbed", got)):
        categorical_kl(torch.randn(5, 2, *shape[2:]), z)
    with pytest.raises(ValueError, match=_ONE_CLASS.format("clean", got)):
        fisher_product("categorical", None, z, torch.randn(shape))
    with pytest.raises(
        ValueError,
        match=rf"^logits must have shape \[B, C, \.\.\.\] for likelihood='categorical', got shape {got} \(softmax over "
        r"dim 1 needs a class dimension of size 2 or more; for one logit per sample use likelihood='bernoulli'\)$",
    ):
        entropy_loss(z)
    assert entropy_loss(z, likelihood="bernoulli").item() > 0
    assert bernoulli_kl(z, z + 1).min().item() > 0


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize(("shape", "likelihood"), [((0, 4), "categorical"), ((0,), "bernoulli"), ((0, 3), "bernoulli")])
def test_entropy_of_an_empty_batch_is_refused_as_by_vat_loss(reduction, shape, likelihood):
    got = re.escape(str(shape))
    with pytest.raises(ValueError, match=rf"^logits must have a non-empty batch dimension, got shape {got}$"):
        entropy_loss(torch.zeros(shape), likelihood=likelihood, reduction=reduction)
    with pytest.raises(ValueError, match=rf"^logits must have a non-empty batch dimension, got shape {got}$"):
        EntropyLoss(likelihood=likelihood, reduction=reduction)(torch.zeros(shape))
