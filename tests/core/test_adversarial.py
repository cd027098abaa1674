"""Adversarial training (Goodfellow et al. 2015)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchvat import AdversarialLoss, adversarial_loss, adversarial_perturbation

from .conftest import BNDropNet


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def test_l2_direction_is_the_normalized_loss_gradient():
    model = _model()
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    r = adversarial_perturbation(model, x, y, eps=0.3)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    assert torch.allclose(r, 0.3 * g / g.norm(dim=1, keepdim=True), atol=1e-6)


def test_linf_is_fgsm():
    model = _model()
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    r = adversarial_perturbation(model, x, y, eps=0.1, norm="linf")
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    assert torch.equal(r, 0.1 * torch.sign(g))


def test_loss_increases_and_reuses_the_clean_graph():
    model = _model()
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    clean = F.cross_entropy(model(x), y)
    fresh = adversarial_loss(model, x, y, eps=0.5)
    assert fresh > clean
    xg = x.clone().requires_grad_(True)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    logits = model(xg)
    reused = adversarial_loss(model, xg, y, logits=logits, eps=0.5)
    assert len(calls) == 2  # the clean pass and the perturbed pass: no extra gradient pass
    assert torch.allclose(reused, fresh, atol=1e-6)
    (F.cross_entropy(logits, y) + reused).backward()  # the clean graph is still usable
    assert all(p.grad is not None for p in model.parameters())


def test_no_side_effects(bn_net):
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    F.cross_entropy(bn_net(x), y).backward()
    grads = [p.grad.clone() for p in bn_net.parameters()]
    stats = [b.clone() for b in bn_net.buffers()]
    adversarial_loss(bn_net, x, y, eps=1.0)
    adversarial_perturbation(bn_net, x, y, eps=1.0)
    assert all(torch.equal(p.grad, g) for p, g in zip(bn_net.parameters(), grads, strict=True))
    assert all(torch.equal(b, s) for b, s in zip(bn_net.buffers(), stats, strict=True))
    assert bn_net.training


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_function_equals_module(reduction):
    model = _model()
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    f = adversarial_loss(model, x, y, eps=0.2, reduction=reduction)
    m = AdversarialLoss(eps=0.2, reduction=reduction)(model, x, y)
    assert torch.equal(f, m) and f.shape == ((5,) if reduction == "none" else ())


def test_mask_and_mapping_input():
    model = _model()
    x = {"features": torch.randn(3, 4), "unused": torch.zeros(1)}
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    r = adversarial_perturbation(
        lambda features, unused: model(features), x, torch.tensor([0, 1, 2]), eps=1.0, input_key="features", mask=mask
    )
    assert torch.equal(r[:, 2:], torch.zeros(3, 2)) and torch.allclose(r.norm(dim=1), torch.ones(3))


def test_dropout_masks_replayed():
    torch.manual_seed(0)
    model = BNDropNet(p=0.5).train()
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    a = adversarial_loss(model, x, y, eps=1e-6)
    with torch.no_grad():
        from torchvat import RNGSnapshot

        snap = RNGSnapshot.capture()
        with snap.replay():
            clean = F.cross_entropy(model(x), y)
    with snap.replay():
        b = adversarial_loss(model, x, y, eps=1e-6)
    assert torch.allclose(b, clean, atol=1e-4)
    assert torch.isfinite(a)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": -0.1}, r"eps must be a finite number >= 0, got -0.1"),
        ({"norm": "l3"}, r"norm must be one of 'l2', 'linf', got 'l3'"),
        ({"reduction": "avg"}, r"reduction must be one of 'none', 'mean', 'sum', got 'avg'"),
        ({"loss_fn": lambda o, y: F.cross_entropy(o, y)}, r"loss_fn must return per-sample losses of shape \[2, ...\]"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        adversarial_loss(nn.Linear(3, 2), torch.randn(2, 3), torch.tensor([0, 1]), **kwargs)


class _TinyTextModel(nn.Module):
    """Hugging Face style: takes ``input_ids`` or ``inputs_embeds``, returns a mapping with logits."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.head = nn.Embedding(20, 6), nn.Linear(6, 3)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.emb

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None):
        h = self.emb(input_ids) if inputs_embeds is None else inputs_embeds
        m = attention_mask.unsqueeze(-1).float()
        return {"logits": self.head((h * m).sum(1) / m.sum(1))}


def test_logits_from_a_pass_without_x_are_not_a_zero_gradient():
    # the clean pass took token ids; x holds embeddings computed apart (they require grad through
    # the embedding weights, but the logits do not depend on them): a pass of its own is needed
    torch.manual_seed(0)
    model = _TinyTextModel()
    ids, am = torch.randint(0, 20, (4, 5)), torch.ones(4, 5, dtype=torch.long)
    y = torch.tensor([0, 1, 2, 0])
    out = model(input_ids=ids, attention_mask=am)
    x = {"inputs_embeds": model.get_input_embeddings()(ids), "attention_mask": am}
    assert x["inputs_embeds"].requires_grad
    kwargs = {"input_key": "inputs_embeds", "eps": 1.0}
    r_with = adversarial_perturbation(model, x, y, logits=out, **kwargs)
    r_without = adversarial_perturbation(model, x, y, **kwargs)
    torch.testing.assert_close(r_with.flatten(1).norm(dim=1), torch.ones(4))
    torch.testing.assert_close(r_with, r_without)
    adv = adversarial_loss(model, x, y, logits=out, **kwargs)
    assert adv > F.cross_entropy(out["logits"], y)
    torch.testing.assert_close(adv, adversarial_loss(model, x, y, **kwargs))
    (F.cross_entropy(out["logits"], y) + adv).backward()  # the caller's graph is still usable


def test_one_dimensional_input_and_output():
    torch.manual_seed(0)
    lin = nn.Linear(1, 3)
    x, y = torch.randn(4), torch.tensor([0, 1, 2, 0])  # x: [B]
    for norm in ("l2", "linf"):
        r = adversarial_perturbation(lambda v: lin(v.unsqueeze(1)), x, y, eps=0.1, norm=norm)
        assert r.shape == (4,) and torch.allclose(r.abs(), torch.full((4,), 0.1)), norm
    # a binary classifier with one logit per sample, [B], and a per-sample BCE
    binary = nn.Linear(4, 1)

    def bce(o, t):
        return F.binary_cross_entropy_with_logits(o, t, reduction="none")

    xb, yb = torch.randn(5, 4), torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    for norm in ("l2", "linf"):
        loss = adversarial_loss(lambda v: binary(v).squeeze(-1), xb, yb, eps=0.5, norm=norm, loss_fn=bce)
        assert loss > bce(binary(xb).squeeze(-1), yb).mean(), norm


def test_inference_mode_is_refused_and_no_grad_works():
    # torch.enable_grad() does nothing under inference_mode: r_adv would silently be 0, the loss the clean one
    model, x, y = _model(), torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    r = adversarial_perturbation(model, x, y, eps=0.5)
    message = (
        r"^{} cannot take input gradients under torch\.inference_mode\(\): torch\.is_inference_mode_enabled\(\) "
        r"must be False, got True .*use torch\.no_grad\(\) instead, or call it outside the inference_mode context$"
    )
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match=message.format("adversarial_perturbation")):
            adversarial_perturbation(model, x, y, eps=0.5)
        with pytest.raises(RuntimeError, match=message.format("adversarial_loss")):
            adversarial_loss(model, x, y, eps=0.5)
        with pytest.raises(RuntimeError, match=message.format("adversarial_loss")):
            AdversarialLoss(eps=0.5)(model, x, y)
    with torch.no_grad():
        torch.testing.assert_close(adversarial_perturbation(model, x, y, eps=0.5), r)
        assert adversarial_loss(model, x, y, eps=0.5) > F.cross_entropy(model(x), y)
