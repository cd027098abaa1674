"""TRADES (Zhang et al. 2019): VAT's divergence maximized by projected gradient ascent."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchvat
from torchvat import RNGSnapshot, TRADESLoss, trades_loss, trades_perturbation
from torchvat.core import TargetMismatchWarning
from torchvat.core.divergence import categorical_kl

from .conftest import BNDropNet


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def _x(n: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 6, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_exported():
    for name in ("trades_loss", "TRADESLoss", "trades_perturbation", "projected_gradient_ascent"):
        assert name in torchvat.__all__ and name in torchvat.core.__all__


def test_value_is_the_divergence_at_the_trades_perturbation():
    model, x = _mlp(), _x()
    kw = {"eps": 0.5, "norm": "linf", "steps": 5}
    r = trades_perturbation(model, x, generator=_gen(), **kw)
    with torch.no_grad():
        expected = categorical_kl(model(x), model(x + r))
    torch.testing.assert_close(trades_loss(model, x, generator=_gen(), reduction="none", **kw), expected)
    assert bool((expected > 0).all())


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_tiny_eps_gives_almost_zero_and_zero_eps_zero(norm):
    model, x = _mlp(), _x()
    assert trades_loss(model, x, eps=1e-4, norm=norm).item() < 1e-7
    assert torch.equal(trades_loss(model, x, eps=0.0, norm=norm, reduction="none"), torch.zeros(12))
    assert trades_loss(model, x, eps=1.0, norm=norm).item() > 1e-3


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_inside_the_ball_and_the_bounds(norm):
    model, x = _mlp(), torch.sigmoid(_x(16))
    eps = torch.linspace(0.05, 1.5, 16)
    for clamp in (None, (0.0, 1.0)):
        r = trades_perturbation(model, x, eps=eps, norm=norm, steps=6, clamp=clamp, generator=_gen())
        size = r.abs().amax(1) if norm == "linf" else r.norm(dim=1)
        assert bool((size <= eps * (1 + 1e-6)).all())
        if clamp is not None:
            assert bool(((x + r) >= -1e-7).all() and ((x + r) <= 1 + 1e-7).all())


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_best_iterate_never_below_the_last_and_the_search_beats_its_start(norm):
    for seed in range(3):
        model, x = _mlp(seed), _x(24, seed + 5)
        kw = {"eps": 0.8, "norm": norm, "steps": 8, "reduction": "none"}
        best = trades_loss(model, x, keep="best", generator=_gen(seed), **kw)
        last = trades_loss(model, x, keep="last", generator=_gen(seed), **kw)
        assert bool((best >= last).all())
        # the random start alone (no step taken in its direction) finds less divergence
        start = torchvat.core.search.random_start_in_ball(x, 0.8, norm, None, _gen(seed))
        with torch.no_grad():
            at_start = categorical_kl(model(x), model(x + start))
        assert bool(best.mean() > at_start.mean())


def test_more_divergence_than_vat_at_the_same_eps_on_average():
    # PGD on the divergence itself finds at least what one power-iteration step finds (on the whole)
    model, x = _mlp(), _x(64)
    vat = torchvat.vat_loss(model, x, eps=1.0, generator=_gen())
    assert trades_loss(model, x, eps=1.0, steps=10, generator=_gen()).item() >= vat.item()


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_function_equals_module(reduction):
    model, x = _mlp(), _x()
    kw = {"eps": 0.3, "norm": "linf", "steps": 4, "step_size": 0.1, "clamp": (-3.0, 3.0), "keep": "last"}
    f = trades_loss(model, x, reduction=reduction, generator=_gen(), **kw)
    m = TRADESLoss(reduction=reduction, **kw)(model, x, generator=_gen())
    assert torch.equal(f, m) and f.shape == ((12,) if reduction == "none" else ())
    assert "steps=4" in repr(TRADESLoss(**kw))


def test_gradient_flows_through_the_clean_logits_as_in_the_paper():
    model, x = _mlp(), _x()
    logits = model(x)
    with_graph = trades_loss(model, x, logits=logits, eps=0.5, generator=_gen())
    detached = trades_loss(model, x, logits=logits.detach(), eps=0.5, generator=_gen())
    torch.testing.assert_close(with_graph, detached)
    g_with = torch.autograd.grad(with_graph, list(model.parameters()))
    g_detached = torch.autograd.grad(detached, list(model.parameters()))
    assert any(not torch.allclose(a, b) for a, b in zip(g_with, g_detached, strict=True))
    # without logits, the clean pass is made inside, with its graph: the same value and gradient
    inside = trades_loss(model, x, eps=0.5, generator=_gen())
    torch.testing.assert_close(inside, with_graph)
    for a, b in zip(torch.autograd.grad(inside, list(model.parameters())), g_with, strict=True):
        torch.testing.assert_close(a, b)


def test_float64_gradient_through_both_passes():
    # for a fixed perturbation (the search's result is a constant) the loss is smooth in the parameters
    model, x = _mlp().double(), _x().double()
    r = trades_perturbation(model, x, eps=0.3, steps=3, generator=_gen())
    weight = model[0].weight

    def loss_of(w):
        h = F.linear

        def forward(v):
            z = torch.tanh(h(v, w, model[0].bias))
            return model[4](torch.relu(model[2](z)))

        return categorical_kl(forward(x), forward(x + r)).mean()

    assert torch.autograd.gradcheck(loss_of, (weight.detach().clone().requires_grad_(True),))


def test_no_side_effects(bn_net):
    x = torch.randn(8, 6)
    F.cross_entropy(bn_net(x), torch.randint(0, 3, (8,))).backward()
    grads = [p.grad.clone() for p in bn_net.parameters()]
    stats = [b.clone() for b in bn_net.buffers()]
    for training in (True, False):
        bn_net.train(training)
        trades_loss(bn_net, x, eps=1.0, steps=3)
        trades_perturbation(bn_net, x, eps=1.0, steps=3, clamp=(-2.0, 2.0))
        assert bn_net.training is training
        assert all(torch.equal(p.grad, g) for p, g in zip(bn_net.parameters(), grads, strict=True))
        assert all(torch.equal(b, s) for b, s in zip(bn_net.buffers(), stats, strict=True))


def test_dropout_masks_are_replayed():
    torch.manual_seed(0)
    model = BNDropNet(p=0.5).train()
    x = torch.randn(16, 6)
    snap = RNGSnapshot.capture()
    with snap.replay():
        logits = model(x)
    # with the clean pass's masks replayed, the divergence vanishes at a tiny eps; with other masks it would not
    assert trades_loss(model, x, logits=logits, eps=1e-6, steps=3, rng=snap).item() < 1e-6
    with torch.no_grad():
        other = categorical_kl(logits.detach(), model(x)).mean()
    assert float(other) > 1e-2


def test_target_from_another_batch_composition_warns_once():
    torch.manual_seed(0)
    model = BNDropNet().train()
    x_l, x_u = torch.randn(8, 6), torch.randn(24, 6)
    joint = model(torch.cat([x_l, x_u]))[8:]
    with pytest.warns(TargetMismatchWarning, match="the given logits are not the model's own clean output"):
        trades_loss(model, x_u, logits=joint, eps=0.5, steps=2)


def test_works_under_no_grad_and_refuses_inference_mode():
    model, x = _mlp(), _x()
    with torch.no_grad():
        value = trades_loss(model, x, eps=0.5, steps=3, generator=_gen())
    assert not value.requires_grad and float(value) > 0
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"^trades_loss cannot take input gradients"):
        trades_loss(model, x, eps=0.5)


def test_class_dim_minus_one_equals_class_dim_one():
    torch.manual_seed(0)
    head = nn.Linear(4, 3)

    def tokens(v):  # [B, T, E] -> [B, T, C]
        return head(torch.tanh(v))

    x = torch.randn(3, 5, 4)
    om = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    kw = {"eps": 0.5, "steps": 4, "output_mask": om, "reduction": "none"}
    last = trades_loss(tokens, x, class_dim=-1, generator=_gen(), **kw)
    first = trades_loss(lambda v: tokens(v).transpose(1, 2), x, generator=_gen(), **kw)
    torch.testing.assert_close(last, first)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, r"^steps must be an integer >= 1, got 0$"),
        ({"step_size": 0.0}, r"^step_size must be None or a finite number > 0, got 0\.0$"),
        ({"clamp": (1.0, 0.0)}, r"^clamp must be None or a pair \(lo, hi\) of finite numbers with lo < hi"),
        ({"keep": "all"}, r"^keep must be one of 'best', 'last', got 'all'$"),
        ({"eps": -1.0}, r"^eps must be a finite number >= 0, got -1\.0$"),
        ({"norm": "l1"}, r"^norm must be one of 'l2', 'linf', got 'l1'$"),
        ({"reduction": "avg"}, r"^reduction must be one of 'none', 'mean', 'sum', got 'avg'$"),
        ({"likelihood": "poisson"}, r"^likelihood must be one of"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        trades_loss(nn.Linear(3, 2), torch.randn(2, 3), **kwargs)
    with pytest.raises(ValueError, match=match):
        TRADESLoss(**kwargs)
