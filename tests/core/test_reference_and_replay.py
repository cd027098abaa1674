"""One power step against the paper's formula in float64; every pass of a loss draws the caller's dropout masks."""

import pytest
import torch
from torch import nn

from torchvat import RNGSnapshot, adversarial_loss, vat_loss, virtual_adversarial_perturbation
from torchvat.core import categorical_kl, probe_scale


# reference implementation
@pytest.mark.parametrize("xi", [0.5, 1e-2])
def test_one_power_step_matches_the_papers_formula(xi):
    """r = eps * g / ||g||, g = grad_r KL(p(x) || p(x + xi d0)) at r = xi d0 (sign included)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    eps = 0.7
    # the start is drawn in float32 in every precision (the same seed, the same start)
    d0 = torch.randn(x.shape, generator=torch.Generator().manual_seed(7)).double()
    d0 = d0 / d0.norm(dim=1, keepdim=True)
    p = model(x).detach()
    d = d0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(categorical_kl(p, model(x + xi * d)).sum(), d)
    r_ref = eps * g / g.norm(dim=1, keepdim=True)
    r = virtual_adversarial_perturbation(
        model, x, eps=eps, xi=xi, n_power=1, probe="finite_difference", generator=torch.Generator().manual_seed(7)
    )
    torch.testing.assert_close(r, r_ref, rtol=1e-7, atol=1e-9)
    lds = vat_loss(
        model,
        x,
        eps=eps,
        xi=xi,
        n_power=1,
        probe="finite_difference",
        generator=torch.Generator().manual_seed(7),
        reduction="none",
    )
    torch.testing.assert_close(lds, categorical_kl(p, model(x + r_ref)), rtol=1e-7, atol=1e-10)


# xi='auto' is capped at eps
def test_auto_probe_step_is_capped_at_eps():
    x = 1e3 * torch.randn(4, 10)
    step = probe_scale(x, "auto", 1e-5).reshape(-1)
    assert bool((step <= 1e-5).all())
    step_t = probe_scale(x, "auto", torch.tensor([1e-5, 1.0, 1e-6, 10.0])).reshape(-1)
    assert step_t[0] <= 1e-5 and step_t[2] <= 1e-6


# every pass draws the clean pass's mask
@pytest.mark.parametrize("probe", ["finite_difference", "exact"])
@pytest.mark.parametrize("with_logits", [True, False])
def test_every_pass_of_vat_loss_replays_the_callers_masks(probe, with_logits, dropout_net, mask_recorder):
    model = dropout_net()
    masks = mask_recorder(model)
    x = torch.randn(16, 6)
    snap = RNGSnapshot.capture()
    with snap.replay():
        logits = model(x)
    torch.rand(1000)  # the caller's generator moved on since the snapshot
    vat_loss(
        model,
        x,
        logits=logits if with_logits else None,
        eps=1.0,
        n_power=2,
        probe=probe,
        rng=snap,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(masks) >= 3
    for i, m in enumerate(masks[1:], 1):
        assert torch.equal(m, masks[0]), f"pass {i} drew another dropout mask"


def test_every_pass_of_adversarial_loss_replays_the_callers_masks(dropout_net, mask_recorder):
    model = dropout_net()
    masks = mask_recorder(model)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    snap = RNGSnapshot.capture()
    with snap.replay():
        logits = model(x)
    torch.rand(1000)
    adversarial_loss(model, x, y, logits=logits, eps=0.5, rng=snap)
    assert len(masks) == 3
    assert all(torch.equal(m, masks[0]) for m in masks[1:])


# replay restores the entry state
def test_replay_restores_the_state_found_on_entry_whatever_the_body_draws():
    snap = RNGSnapshot.capture()
    torch.rand(10)
    entry = torch.get_rng_state()
    with snap.replay():
        torch.rand(3)
    assert torch.equal(torch.get_rng_state(), entry)
    with snap.replay():
        pass
    assert torch.equal(torch.get_rng_state(), entry)


# the mask holds for every power step
@pytest.mark.parametrize("probe", ["finite_difference", "exact"])
@pytest.mark.parametrize("n_power", [0, 1, 3])
def test_masked_inputs_are_never_perturbed_by_a_model_that_reads_them(probe, n_power):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))  # every input matters
    x = torch.randn(5, 8)
    mask = torch.zeros(5, 8)
    mask[:, :4] = 1
    r = virtual_adversarial_perturbation(model, x, eps=0.7, mask=mask, n_power=n_power, probe=probe)
    assert torch.equal(r[:, 4:], torch.zeros(5, 4))
    torch.testing.assert_close(r.norm(dim=1), torch.full((5,), 0.7))
