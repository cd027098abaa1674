"""Projected gradient descent: the multi-step adversarial perturbation (Madry et al. 2018)."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchvat import AdversarialLoss, RNGSnapshot, adversarial_loss, adversarial_perturbation, projected_gradient_ascent
from torchvat.core import perturbation
from torchvat.core.search import default_step_size

from .conftest import BNDropNet


def _mlp(d_in: int = 6, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def _data(n: int = 12, d_in: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g), torch.randint(0, 3, (n,), generator=g)


def _per_sample_loss(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


def _reference_pgd(model, x, y, *, eps, norm, steps, step_size, clamp=None):
    """PGD written out plainly (float64 in the test that calls it): clip to the bounds, then project."""
    r = torch.zeros_like(x)
    for _ in range(steps):
        xr = (x + r).requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
        if norm == "linf":
            u = g.sign()
        else:
            u = g / g.norm(dim=1, keepdim=True)
        r = r + step_size * u
        if clamp is not None:
            r = (x + r).clamp(*clamp) - x
        if norm == "linf":
            r = r.clamp(-eps, eps)
        else:
            r = r * (eps / r.norm(dim=1, keepdim=True)).clamp_max(1.0)
    return r


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_one_step_equals_the_one_step_perturbation_bitwise(norm):
    model = _mlp()
    x, y = _data()
    old = perturbation.one_step_adversarial_perturbation(model, x, y, eps=0.3, norm=norm)
    assert torch.equal(adversarial_perturbation(model, x, y, eps=0.3, norm=norm), old)
    explicit = adversarial_perturbation(model, x, y, eps=0.3, norm=norm, steps=1, random_start=False, keep="last")
    assert torch.equal(explicit, old)
    # a step size at least eps is projected to the full step: the same perturbation
    assert torch.equal(adversarial_perturbation(model, x, y, eps=0.3, norm=norm, step_size=5.0), old)
    eps = torch.linspace(0.1, 0.5, 12)  # per sample
    per_sample = adversarial_perturbation(model, x, y, eps=eps, norm=norm)
    assert torch.equal(per_sample, perturbation.one_step_adversarial_perturbation(model, x, y, eps=eps, norm=norm))
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    fgsm = 0.3 * (g.sign() if norm == "linf" else g / g.norm(dim=1, keepdim=True))
    torch.testing.assert_close(old, fgsm)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_last_iterate_equals_a_plain_pgd_loop_in_float64(norm):
    model = _mlp().double()
    x, y = _data()
    x = torch.sigmoid(x.double())  # inputs in (0, 1)
    for clamp in (None, (0.0, 1.0)):
        kwargs = {"eps": 0.4, "norm": norm, "steps": 7, "step_size": 0.1}
        r = adversarial_perturbation(model, x, y, clamp=clamp, keep="last", **kwargs)
        torch.testing.assert_close(r, _reference_pgd(model, x, y, clamp=clamp, **kwargs), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("clamp", [None, (-1.0, 1.0)])
def test_more_steps_never_give_a_smaller_loss_than_one_step(norm, clamp):
    for seed in range(4):
        model = _mlp(seed=seed)
        x, y = _data(n=32, seed=seed + 10)
        x = x.clamp(-1, 1)
        one = _per_sample_loss(model, x + adversarial_perturbation(model, x, y, eps=0.8, norm=norm, clamp=clamp), y)
        for steps, step_size in ((2, None), (3, 2.0), (5, None), (10, 0.05), (20, None)):
            r = adversarial_perturbation(model, x, y, eps=0.8, norm=norm, steps=steps, step_size=step_size, clamp=clamp)
            many = _per_sample_loss(model, x + r, y)
            assert bool((many >= one).all()), (seed, steps, (one - many).max())
        # and on the whole, PGD finds more than one step
        assert bool(many.mean() > one.mean())
    # the last iterate alone may be worse for some sample: keep="best" is what makes the promise
    r_last = adversarial_perturbation(
        model, x, y, eps=0.8, norm=norm, steps=20, step_size=0.5, keep="last", clamp=clamp
    )
    r_best = adversarial_perturbation(model, x, y, eps=0.8, norm=norm, steps=20, step_size=0.5, clamp=clamp)
    assert bool((_per_sample_loss(model, x + r_best, y) >= _per_sample_loss(model, x + r_last, y)).all())


def test_best_iterate_is_the_per_sample_maximum_of_the_iterates():
    model = _mlp()
    x, y = _data(n=16)
    seen = []

    def objective(v):
        value = F.cross_entropy(model(v), y, reduction="none")
        seen.append((v.detach().clone(), value.detach().clone()))
        return value

    r = projected_gradient_ascent(objective, x, eps=0.5, norm="l2", steps=6, random_start=False)
    # calls: the gradient at x, at r_1 .. r_5, the one-step candidate, and r_6
    assert len(seen) == 8
    points = torch.stack([v - x for v, _ in seen[1:]])  # candidates: r_1 .. r_6 and the one-step one
    values = torch.stack([val for _, val in seen[1:]])
    pick = values.argmax(0)
    torch.testing.assert_close(r, points[pick, torch.arange(16)])


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_linear_model_pgd_equals_one_step(norm):
    # cross entropy of a two-class linear model grows along one fixed direction: the one step is optimal
    torch.manual_seed(0)
    model = nn.Linear(5, 2).double()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 2, (8,))
    one = adversarial_perturbation(model, x, y, eps=0.7, norm=norm)
    for keep in ("best", "last"):
        many = adversarial_perturbation(model, x, y, eps=0.7, norm=norm, steps=12, keep=keep)
        torch.testing.assert_close(many, one)


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("random_start", [False, True])
@pytest.mark.parametrize("keep", ["best", "last"])
def test_result_inside_the_ball_and_the_bounds(norm, random_start, keep):
    model = _mlp()
    x, y = _data(n=16)
    x = torch.sigmoid(x)
    eps = torch.linspace(0.05, 2.0, 16)
    for clamp in (None, (0.0, 1.0)):
        r = adversarial_perturbation(
            model, x, y, eps=eps, norm=norm, steps=8, random_start=random_start, keep=keep, clamp=clamp
        )
        size = r.abs().amax(1) if norm == "linf" else r.norm(dim=1)
        assert bool((size <= eps * (1 + 1e-6)).all())
        if clamp is not None:
            assert bool(((x + r) >= -1e-7).all() and ((x + r) <= 1 + 1e-7).all())
        # at these sizes, some samples reach the ball's boundary
        assert bool((size >= eps * (1 - 1e-5)).any())


def test_default_step_size_is_madrys_rule():
    assert default_step_size(0.4, 10) == pytest.approx(0.1)
    torch.testing.assert_close(default_step_size(torch.tensor([0.4, 1.0]), 5), torch.tensor([0.2, 0.5]))
    model = _mlp()
    x, y = _data()
    for norm in ("l2", "linf"):
        default = adversarial_perturbation(model, x, y, eps=0.4, norm=norm, steps=10, keep="last")
        explicit = adversarial_perturbation(model, x, y, eps=0.4, norm=norm, steps=10, step_size=0.1, keep="last")
        torch.testing.assert_close(default, explicit)


def test_random_start_is_reproducible_with_a_generator_and_lies_in_the_ball():
    model = _mlp()
    x, y = _data()
    kw = {"eps": 0.5, "steps": 3, "random_start": True}
    a = adversarial_perturbation(model, x, y, generator=torch.Generator().manual_seed(3), **kw)
    b = adversarial_perturbation(model, x, y, generator=torch.Generator().manual_seed(3), **kw)
    c = adversarial_perturbation(model, x, y, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # one step from a random start is not the one step from x
    one = adversarial_perturbation(model, x, y, eps=0.5, random_start=True, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(one, adversarial_perturbation(model, x, y, eps=0.5))


@pytest.mark.parametrize("kw", [{"steps": 5}, {"steps": 5, "random_start": True}, {"steps": 3, "clamp": (-2.0, 2.0)}])
def test_no_side_effects(bn_net, kw):
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    F.cross_entropy(bn_net(x), y).backward()
    grads = [p.grad.clone() for p in bn_net.parameters()]
    stats = [b.clone() for b in bn_net.buffers()]
    for training in (True, False):
        bn_net.train(training)
        adversarial_loss(bn_net, x, y, eps=1.0, **kw)
        adversarial_perturbation(bn_net, x, y, eps=1.0, **kw)
        assert bn_net.training is training
        assert all(torch.equal(p.grad, g) for p, g in zip(bn_net.parameters(), grads, strict=True))
        assert all(torch.equal(b, s) for b, s in zip(bn_net.buffers(), stats, strict=True))


def test_state_restored_when_a_pass_raises(bn_net):
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    stats = [b.clone() for b in bn_net.buffers()]
    calls = []

    def fail_on_third(module, args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")

    handle = bn_net.register_forward_pre_hook(fail_on_third)
    with pytest.raises(RuntimeError, match="boom"):
        adversarial_perturbation(bn_net, x, y, eps=1.0, steps=5)
    handle.remove()
    assert bn_net.training and all(m.track_running_stats for m in bn_net.modules() if isinstance(m, nn.BatchNorm1d))
    assert all(torch.equal(b, s) for b, s in zip(bn_net.buffers(), stats, strict=True))


def test_input_gradients_only():
    model = _mlp()
    x, y = _data()
    x = x.requires_grad_(True)
    adversarial_perturbation(model, x, y, eps=0.5, steps=4)
    assert x.grad is None and all(p.grad is None for p in model.parameters())


def test_dropout_masks_are_replayed_in_every_pass():
    torch.manual_seed(0)
    model = BNDropNet(p=0.5).train()
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    snap = RNGSnapshot.capture()
    with torch.no_grad(), snap.replay():
        clean = F.cross_entropy(model(x), y, reduction="none")
    # at a tiny eps, every pass of the search sees the clean pass's masks: the loss is the clean loss
    adv = adversarial_loss(model, x, y, eps=1e-6, steps=5, reduction="none", rng=snap)
    torch.testing.assert_close(adv, clean, atol=1e-4, rtol=0)
    # and the search reads the same masks as a deterministic model would: the result is reproducible
    r1 = adversarial_perturbation(model, x, y, eps=0.5, steps=5, rng=snap)
    r2 = adversarial_perturbation(model, x, y, eps=0.5, steps=5, rng=snap)
    assert torch.equal(r1, r2)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_function_equals_module(reduction):
    model = _mlp()
    x, y = _data()
    kw = {"eps": 0.3, "norm": "linf", "steps": 4, "step_size": 0.1, "clamp": (-3.0, 3.0), "keep": "last"}
    f = adversarial_loss(model, x, y, reduction=reduction, **kw)
    m = AdversarialLoss(reduction=reduction, **kw)(model, x, y)
    assert torch.equal(f, m) and f.shape == ((12,) if reduction == "none" else ())
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    f = adversarial_loss(model, x, y, random_start=True, generator=g1, reduction=reduction, **kw)
    m = AdversarialLoss(random_start=True, reduction=reduction, **kw)(model, x, y, generator=g2)
    assert torch.equal(f, m)
    assert "steps=4" in repr(AdversarialLoss(**kw)) and "steps" not in repr(AdversarialLoss(eps=0.3))


def test_logits_reuse_gives_the_same_perturbation():
    model = _mlp()
    x, y = _data()
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    with_logits = adversarial_loss(model, xg, y, logits=logits, eps=0.5, steps=6)
    torch.testing.assert_close(with_logits, adversarial_loss(model, x, y, eps=0.5, steps=6))
    (F.cross_entropy(logits, y) + with_logits).backward()  # the caller's graph is still usable


def test_class_dim_and_output_mask():
    torch.manual_seed(0)
    head = nn.Linear(4, 3)

    def tokens(v):  # [B, T, E] -> [B, T, C]
        return head(torch.tanh(v))

    x = torch.randn(3, 5, 4)
    y = torch.randint(0, 3, (3, 5))
    om = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    kw = {"eps": 0.5, "steps": 4}
    r_last = adversarial_perturbation(tokens, x, y, class_dim=-1, output_mask=om, **kw)
    r_first = adversarial_perturbation(lambda v: tokens(v).transpose(1, 2), x, y, output_mask=om, **kw)
    torch.testing.assert_close(r_last, r_first)


def test_mask_keeps_positions_unperturbed_also_with_bounds():
    model = _mlp()
    x, y = _data()
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0, 0.0, 1.0]])  # [1, D]: the same for every sample
    for kw in ({"steps": 5}, {"steps": 5, "random_start": True}, {"steps": 5, "clamp": (-0.5, 0.5)}):
        r = adversarial_perturbation(model, x, y, eps=1.0, mask=mask, **kw)
        assert torch.equal(r[:, mask[0] == 0], torch.zeros(12, 2)), kw
        assert bool((r[:, mask[0] == 1] != 0).any())


def test_zero_eps_gives_zero():
    model = _mlp()
    x, y = _data()
    for kw in ({"steps": 5}, {"steps": 5, "random_start": True}):
        assert torch.equal(adversarial_perturbation(model, x, y, eps=0.0, **kw), torch.zeros_like(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, r"^steps must be an integer >= 1, got 0$"),
        ({"steps": 2.5}, r"^steps must be an integer >= 1, got 2\.5$"),
        ({"steps": True}, r"^steps must be an integer >= 1, got True$"),
        ({"step_size": 0.0}, r"^step_size must be None or a finite number > 0, got 0\.0$"),
        ({"step_size": -1}, r"^step_size must be None or a finite number > 0, got -1$"),
        ({"step_size": float("nan")}, r"^step_size must be None or a finite number > 0, got nan$"),
        ({"step_size": torch.tensor([0.1, 0.0])}, r"^step_size must be finite and > 0 everywhere, got \[0\.1"),
        (
            {"clamp": (1.0, 0.0)},
            r"^clamp must be None or a pair \(lo, hi\) of finite numbers with lo < hi, got \(1\.0, 0",
        ),
        ({"clamp": (0.0, 0.0)}, r"clamp must be None or a pair \(lo, hi\) .*got \(0\.0, 0\.0\) \(lo >= hi\)$"),
        ({"clamp": (0.0,)}, r"clamp must be None or a pair \(lo, hi\) .*got \(0\.0,\)$"),
        ({"clamp": (0.0, float("inf"))}, r"clamp must be None or a pair \(lo, hi\) of finite numbers"),
        ({"keep": "first"}, r"^keep must be one of 'best', 'last', got 'first'$"),
        ({"random_start": 1}, r"^random_start must be a bool, got 1$"),
    ],
)
def test_bad_arguments(kwargs, match):
    model, x, y = nn.Linear(3, 2), torch.randn(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=match):
        adversarial_loss(model, x, y, **kwargs)
    with pytest.raises(ValueError, match=match):
        adversarial_perturbation(model, x, y, **kwargs)
    with pytest.raises(ValueError, match=match):
        AdversarialLoss(**kwargs)


def test_objective_must_return_one_value_per_sample():
    with pytest.raises(ValueError, match=r"objective must return one value per sample, of shape \[2\], got \(\)"):
        projected_gradient_ascent(lambda v: v.sum(), torch.randn(2, 3), eps=1.0, steps=2)


def _digits_mlp():
    """A small MLP trained on scikit-learn's digits, inputs in [0, 1]; a held-out batch."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    train, test = perm[:1200], perm[1200:1500]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        idx = train[torch.randint(0, len(train), (128,), generator=g)]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), x[test], y[test]


@pytest.mark.slow
def test_agrees_with_the_adversarial_robustness_toolbox():
    """ART's ProjectedGradientDescentPyTorch is an independent reference for PGD with bounds."""
    model, x, y = _digits_mlp()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.93
    with warnings.catch_warnings():
        # the toolbox's own import-time warnings (deprecations in its dependencies) are not torchvat's
        warnings.simplefilter("ignore")
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier

    classifier = PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=(64,),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    for norm, eps in (("linf", 0.1), ("l2", 0.5)):
        steps, step_size = 10, 2.5 * eps / 10
        attack = ProjectedGradientDescentPyTorch(
            classifier,
            norm=np.inf if norm == "linf" else 2,
            eps=eps,
            eps_step=step_size,
            max_iter=steps,
            num_random_init=0,
            batch_size=len(x),
            verbose=False,
        )
        x_art = torch.as_tensor(attack.generate(x.numpy(), y=y.numpy()))
        r = adversarial_perturbation(
            model, x, y, eps=eps, norm=norm, steps=steps, step_size=step_size, clamp=(0.0, 1.0), keep="last"
        )
        with torch.no_grad():
            acc_art = (model(x_art).argmax(1) == y).float().mean().item()
            acc_torchvat = (model(x + r).argmax(1) == y).float().mean().item()
            acc_clean = (model(x).argmax(1) == y).float().mean().item()
        assert abs(acc_torchvat - acc_art) <= 0.01, (norm, acc_torchvat, acc_art)
        assert acc_torchvat < acc_clean - 0.1  # the attack is not vacuous at this eps
