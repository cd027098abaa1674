"""The order of the VAT family's divergence (``kl_direction``, Oliver et al. 2018's KL(p(x + r) || p(x)), issue 18)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from torchvat.train import TrainConfig, get_method
from torchvat.train.methods import Batch
from torchvat.train.step import compute_method_loss


def _kl(p1: float, q1: float) -> float:
    """KL(Bernoulli(p1) || Bernoulli(q1)) written out: the two-class softmax in closed form."""
    return p1 * math.log(p1 / q1) + (1 - p1) * math.log((1 - p1) / (1 - q1))


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


@pytest.mark.parametrize("name", ["vat", "vat+ent", "at+vat"])
def test_the_term_is_the_closed_form_of_its_direction(name):
    # logits [0, a x] on a 1-D input: the perturbation of norm eps is +eps or -eps
    a, x_u, eps = 3.0, 0.3, 0.7
    model = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0], [a]]))
    batch = Batch(
        x_labeled=torch.tensor([[0.5]], dtype=torch.float64),
        y_labeled=torch.tensor([0]),
        x_unlabeled=torch.tensor([[x_u]], dtype=torch.float64),
    )
    model = model.double()
    p = _sigmoid(a * x_u)
    perturbed = [_sigmoid(a * (x_u + s * eps)) for s in (1.0, -1.0)]
    forward = [_kl(p, q) for q in perturbed]  # KL(p(x) || p(x + r)), the VAT papers
    reverse = [_kl(q, p) for q in perturbed]  # KL(p(x + r) || p(x)), Oliver et al.
    assert min(abs(f - r) for f in forward for r in reverse) > 1e-3  # the two orders differ here
    got = {}
    for direction in ("clean-perturbed", "perturbed-clean"):
        method = get_method(name, eps=eps, kl_direction=direction, beta=0.0)
        assert method.kl_direction == direction
        _, terms, _ = compute_method_loss(model, method, batch, method.weights, generator=torch.Generator())
        got[direction] = float(terms["vat"].detach())
    assert min(abs(got["clean-perturbed"] - f) for f in forward) < 1e-9
    assert min(abs(got["perturbed-clean"] - r) for r in reverse) < 1e-9


def test_the_default_is_the_papers_and_a_bad_value_is_refused_naming_the_field():
    assert TrainConfig().kl_direction == "clean-perturbed"
    assert get_method("vat", eps=1.0).kl_direction == "clean-perturbed"
    message = r"kl_direction must be one of 'clean-perturbed', 'perturbed-clean', got 'forward'"
    with pytest.raises(ValueError, match=message):
        TrainConfig(kl_direction="forward")
    with pytest.raises(ValueError, match=message):
        get_method("vat", eps=1.0, kl_direction="forward")


def test_methods_without_the_divergence_ignore_it():
    assert not hasattr(get_method("at", eps=1.0, kl_direction="perturbed-clean"), "kl_direction")
