"""The BatchNorm guard, RNG snapshots, the data-derived eps and the public API."""

import functools
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import torchvat
from torchvat import RNGSnapshot, adversarial_loss, frozen_batchnorm_stats, suggest_eps, vat_loss


@pytest.mark.parametrize("cls", [nn.BatchNorm1d, nn.SyncBatchNorm, nn.LazyBatchNorm1d])
def test_frozen_batchnorm_stats_uses_batch_statistics_without_updating(cls):
    bn = cls(3) if cls is not nn.LazyBatchNorm1d else cls()
    bn.train()
    x = torch.randn(16, 3) * 4 + 2
    if cls is nn.LazyBatchNorm1d:
        bn(torch.randn(4, 3))  # materialize
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    with frozen_batchnorm_stats(bn):
        out = bn(x)
    expected = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias
    assert torch.allclose(out, expected, atol=1e-5)
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert bn.track_running_stats
    bn(x)  # outside the guard it updates again
    assert int(bn.num_batches_tracked) == int(before["num_batches_tracked"]) + 1


def test_frozen_batchnorm_stats_leaves_eval_layers_and_restores_after_error():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.BatchNorm1d(3).eval())
    with pytest.raises(RuntimeError), frozen_batchnorm_stats(model):
        assert not model[1].track_running_stats and model[2].track_running_stats
        raise RuntimeError
    assert model[1].track_running_stats and model[2].track_running_stats


def test_rng_snapshot_replays_and_restores():
    torch.manual_seed(3)
    snap = RNGSnapshot.capture("cpu")
    first = torch.rand(4)
    after = torch.get_rng_state()
    with snap.replay():
        again = torch.rand(4)
    assert torch.equal(first, again)
    assert torch.equal(torch.get_rng_state(), after)  # the state found on entry is back


def test_suggest_eps_rules():
    line = torch.arange(20.0).unsqueeze(1) * 3
    assert suggest_eps(line, rule="nn") == pytest.approx(1.5)
    assert suggest_eps(line, rule="nn", scale=1.0) == pytest.approx(3.0)
    radius = (line - line.mean()).abs().median().item()
    assert suggest_eps(line) == pytest.approx(0.25 * radius)
    # the radius rule does not shrink as the space fills up; the neighbour rule does
    dense = torch.arange(200.0).unsqueeze(1) * 0.3
    assert suggest_eps(dense) == pytest.approx(suggest_eps(line), rel=0.15)
    assert suggest_eps(dense, rule="nn") < 0.2 * suggest_eps(line, rule="nn")
    pts = torch.randn(500, 10)
    norm_eps = suggest_eps(pts, rule="norm")
    assert norm_eps == pytest.approx(0.05 * pts.norm(dim=1).median().item(), rel=0.05)
    # invariant to duplicates, scales with the data
    dup = torch.cat([line, line])
    assert suggest_eps(dup, rule="nn") == pytest.approx(1.5)
    for rule in ("radius", "nn", "norm"):
        assert suggest_eps(pts * 10, rule=rule) == pytest.approx(10 * suggest_eps(pts, rule=rule), rel=1e-5)
    img = torch.rand(50, 1, 4, 4)
    assert math.isfinite(suggest_eps(img)) and suggest_eps(img) > 0


def test_suggest_eps_labeled_rule_follows_the_distance_to_the_labels():
    line = torch.arange(101.0).unsqueeze(1)  # points 0..100
    two = torch.tensor([[0.0], [100.0]])  # distances to the nearest label: 0..50, median 25
    assert suggest_eps(line, rule="labeled", labeled=two) == pytest.approx(0.75 * 25)
    eleven = torch.arange(0.0, 101.0, 10.0).unsqueeze(1)  # median distance 2 (lower median of 0..5)
    assert suggest_eps(line, rule="labeled", labeled=eleven) < 0.15 * suggest_eps(line, rule="labeled", labeled=two)
    # more unlabeled points in the same space leave it unchanged; it scales with the data
    dense = torch.linspace(0, 100, 1001).unsqueeze(1)
    assert suggest_eps(dense, rule="labeled", labeled=two) == pytest.approx(0.75 * 25, rel=0.02)
    pts, lab = torch.randn(300, 5), torch.randn(20, 5)
    assert suggest_eps(pts * 3, rule="labeled", labeled=lab * 3) == pytest.approx(
        3 * suggest_eps(pts, rule="labeled", labeled=lab), rel=1e-6
    )
    # without labeled inputs, x's own points are the labels (each one's nearest other point)
    assert suggest_eps(line, rule="labeled") == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("x", "kwargs", "exc", "match"),
    [
        (torch.zeros(1, 3), {}, ValueError, r"at least 2 samples"),
        (torch.zeros(5, 3), {}, ValueError, r"all samples in x are identical"),
        (torch.tensor([[0.0], [float("nan")]]), {}, ValueError, r"NaN or Inf"),
        (torch.zeros(5, 3), {"rule": "nn"}, ValueError, r"all samples in x are identical"),
        (
            torch.randn(4, 2),
            {"rule": "median"},
            ValueError,
            r"rule must be one of 'labeled', 'radius', 'nn', 'norm', got 'median'",
        ),
        (torch.randn(4, 2), {"scale": 0.0}, ValueError, r"scale must be a finite number > 0, got 0.0"),
        (torch.zeros(4, 2, dtype=torch.long), {}, TypeError, r"x must be a floating-point tensor"),
        (
            torch.randn(4, 2),
            {"rule": "labeled", "labeled": torch.randn(3, 5)},
            ValueError,
            r"labeled must hold at least 1 sample with x's 2 features, got shape \(3, 5\)",
        ),
        (torch.randn(4, 2), {"rule": "labeled", "labeled": torch.randn(0, 2)}, ValueError, r"at least 1 sample"),
        (
            torch.randn(4, 2),
            {"rule": "labeled", "labeled": torch.tensor([[0.0, float("inf")]])},
            ValueError,
            r"labeled contains NaN or Inf",
        ),
        (torch.randn(4, 2), {"rule": "labeled", "labeled": [[0.0, 1.0]]}, TypeError, r"labeled must be a floating"),
        (torch.ones(4, 2), {"rule": "labeled", "labeled": torch.ones(2, 2)}, ValueError, r"all samples in x are"),
    ],
)
def test_suggest_eps_errors(x, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        suggest_eps(x, **kwargs)


@pytest.mark.parametrize("name", torchvat.__all__)
def test_every_public_name_works(name):
    obj = getattr(torchvat, name)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    if name == "__version__":
        assert isinstance(obj, str) and obj.count(".") >= 2
    elif name in ("vat_loss", "VATLoss"):
        fn = obj if name == "vat_loss" else obj()
        assert torch.isfinite(fn(model, x))
    elif name in ("adversarial_loss", "AdversarialLoss"):
        fn = obj if name == "adversarial_loss" else obj()
        assert torch.isfinite(fn(model, x, y))
    elif name in ("entropy_loss", "EntropyLoss"):
        fn = obj if name == "entropy_loss" else obj()
        assert torch.isfinite(fn(model(x)))
    elif name == "virtual_adversarial_perturbation":
        assert obj(model, x).shape == x.shape
    elif name == "adversarial_perturbation":
        assert obj(model, x, y).shape == x.shape
    elif name == "frozen_batchnorm_stats":
        with obj(model):
            model(x)
        assert int(model[1].num_batches_tracked) == 0
    elif name == "RNGSnapshot":
        assert isinstance(obj.capture(), obj)
    elif name == "suggest_eps":
        assert obj(x) > 0
    elif name in ("trades_loss", "TRADESLoss"):
        fn = obj if name == "trades_loss" else obj()
        assert torch.isfinite(fn(model, x))
    elif name == "trades_perturbation":
        assert obj(model, x).shape == x.shape
    elif name == "projected_gradient_ascent":
        assert obj(lambda v: model(v).logsumexp(1), x, steps=2).shape == x.shape
    else:
        pytest.fail(f"public name {name} has no smoke test")


# ---------------------------------------------------------------- running statistics, however the model is passed


def _fresh_stats_of(bn):
    return (
        torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        and torch.equal(bn.running_var, torch.ones_like(bn.running_var))
        and int(bn.num_batches_tracked) == 0
    )


@pytest.mark.parametrize("probe", ["finite_difference", "exact"])
def test_uninitialized_lazy_batchnorm_initializes_and_keeps_fresh_statistics(probe):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.LazyBatchNorm1d(), nn.ReLU(), nn.Linear(8, 3)).train()
    x = torch.randn(6, 4) + 3
    lds = torchvat.vat_loss(model, x, eps=0.5, probe=probe)
    assert torch.isfinite(lds)
    bn = model[1]
    assert type(bn) is nn.BatchNorm1d  # initialized: it became its plain class
    assert bn.track_running_stats and _fresh_stats_of(bn)  # as a fresh layer: no pass was counted
    model(x)  # the model works afterwards, and updates its statistics as usual
    assert int(bn.num_batches_tracked) == 1
    # the guard on its own: a lazy layer initialized inside it is left with fresh statistics too
    lazy = nn.LazyBatchNorm1d().train()
    with frozen_batchnorm_stats(lazy):
        out = lazy(x)
    assert torch.allclose(out.mean(0), torch.zeros(4), atol=1e-5)  # batch statistics inside
    assert _fresh_stats_of(lazy)


def _bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).train()


def _instancenorm_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(2, 3, 1), nn.InstanceNorm1d(3, track_running_stats=True), nn.Flatten(), nn.Linear(15, 3)
    ).train()


def _scripted_bn_net():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in recent PyTorch
        return torch.jit.script(_bn_net())


_MODELS = {
    "bound forward": (_bn_net, lambda net: net.forward),
    "partial": (_bn_net, functools.partial),
    "partial of bound forward": (_bn_net, lambda net: functools.partial(net.forward)),
    "torchscript": (_scripted_bn_net, lambda net: net),
    "instancenorm": (_instancenorm_net, lambda net: net),
}


@pytest.mark.parametrize("loss", ["vat_finite_difference", "vat_exact", "adversarial"])
@pytest.mark.parametrize("case", list(_MODELS))
def test_running_statistics_kept_however_the_model_is_passed(case, loss):
    make, wrap = _MODELS[case]
    net = make()
    x = torch.randn(6, 2, 5) + 3 if case == "instancenorm" else torch.randn(6, 4) + 3
    y = torch.randint(0, 3, (6,))
    before = {n: b.clone() for n, b in net.named_buffers()}
    assert any("running_mean" in n for n in before)
    model = wrap(net)
    if loss == "adversarial":
        out = torchvat.adversarial_loss(model, x, y, eps=1.0)
    else:
        out = torchvat.vat_loss(model, x, eps=1.0, n_power=2, probe=loss.removeprefix("vat_"))
    assert torch.isfinite(out)
    for n, b in net.named_buffers():
        assert torch.equal(b, before[n]), n
    net(x)  # outside the guard the statistics update again
    assert any(not torch.equal(b, before[n]) for n, b in net.named_buffers())


def test_guarded_module_unwraps_bound_methods_and_partials():
    from torchvat.core.guards import guarded_module

    net = nn.Linear(2, 2)
    assert guarded_module(net) is net
    assert guarded_module(net.forward) is net
    assert guarded_module(functools.partial(net)) is net
    assert guarded_module(functools.partial(functools.partial(net.forward))) is net
    assert guarded_module(lambda v: net(v)) is None  # cannot be looked into
    assert guarded_module(torch.relu) is None


def test_plain_batchnorm_models_take_the_fast_path(monkeypatch):
    from torchvat.core import guards

    def fail(found):
        raise AssertionError("plain BatchNorm layers need no snapshot")

    monkeypatch.setattr(guards, "_sort_out", fail)
    net = _bn_net()
    with frozen_batchnorm_stats(net):
        assert not net[1].track_running_stats
    assert net[1].track_running_stats


# ---------------------------------------------------------------- numbers


def test_numpy_scalars_are_numbers():
    torch.manual_seed(0)
    model, x = nn.Linear(4, 3), torch.randn(5, 4)
    gen = torch.Generator
    ref = torchvat.vat_loss(model, x, eps=0.5, n_power=2, generator=gen().manual_seed(0))
    got = torchvat.vat_loss(model, x, eps=np.float32(0.5), n_power=np.int64(2), generator=gen().manual_seed(0))
    torch.testing.assert_close(got, ref)
    assert torch.isfinite(torchvat.vat_loss(model, x, xi=np.float32(1e-3)))
    assert torch.isfinite(torchvat.adversarial_loss(model, x, torch.zeros(5, dtype=torch.long), eps=np.float32(0.1)))
    with pytest.raises(TypeError, match=r"eps must be a number, got bool \(True\)"):
        torchvat.vat_loss(model, x, eps=True)
    with pytest.raises(TypeError, match=r"eps must be a number, got bool_?"):
        torchvat.vat_loss(model, x, eps=np.bool_(True))
    for bad in (True, np.bool_(True), 1.0, np.float32(1.0)):
        with pytest.raises(ValueError, match=r"n_power must be an integer >= 0, got"):
            torchvat.vat_loss(model, x, n_power=bad)
    with pytest.raises(ValueError, match=r"n_power must be an integer >= 0, got np.int64\(-1\)"):
        torchvat.vat_loss(model, x, n_power=np.int64(-1))


def test_suggest_eps_checks_its_sample_sizes_and_names_what_it_got():
    x = torch.randn(10, 3)
    for name in ("max_queries", "max_references"):
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1, got 0"):
            torchvat.suggest_eps(x, rule="nn", **{name: 0})
    with pytest.raises(TypeError, match=r"got torch.int64 tensor of shape \(10, 3\)"):
        torchvat.suggest_eps(torch.zeros(10, 3, dtype=torch.long))


def test_labeled_rule_when_most_or_all_points_are_labeled_ones():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=g)
    mostly = suggest_eps(x, rule="labeled", labeled=x[:300])  # 3/4 of x are labeled points: distance 0
    assert mostly > 0
    d = torch.cdist(x[300:].double(), x[:300].double()).min(dim=1).values
    assert mostly == pytest.approx(0.75 * float(d.median()), rel=1e-6)  # the other quarter's distances
    assert suggest_eps(x, rule="labeled", labeled=x) == suggest_eps(x, rule="labeled")  # fully labeled


# ---------------------------------------------------------------- float64 data in suggest_eps


def test_suggest_eps_keeps_float64():
    # float64 points 1e-5 apart at an offset of 1000: in float32 they merge into a few values
    x = 1000.0 + torch.arange(10, dtype=torch.float64).unsqueeze(1) * 1e-5
    radius = 0.25 * (x - x.mean()).norm(dim=1).median().item()
    assert suggest_eps(x) == pytest.approx(radius, rel=1e-9)
    assert suggest_eps(x, rule="nn") == pytest.approx(0.5e-5, rel=1e-6)
    assert suggest_eps(x, rule="labeled", labeled=x[:1] - 1e-5) == pytest.approx(0.75 * 5e-5, rel=1e-6)
    # finite float64 beyond float32's range is no "NaN or Inf", and squared distances neither overflow nor underflow
    pts, lab = torch.randn(30, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    for scale in (1e200, 1e-200):
        for rule in ("radius", "nn", "norm"):
            assert suggest_eps(pts * scale, rule=rule) == pytest.approx(scale * suggest_eps(pts, rule=rule), rel=1e-12)
        assert suggest_eps(pts * scale, rule="labeled", labeled=lab * scale) == pytest.approx(
            scale * suggest_eps(pts, rule="labeled", labeled=lab), rel=1e-12
        )
    assert suggest_eps(torch.tensor([[1e200], [2e200], [3e200]], dtype=torch.float64)) == pytest.approx(2.5e199)
    # float32 and lower precisions are measured in float32 at least, as before
    assert suggest_eps(torch.arange(10.0, dtype=torch.bfloat16).unsqueeze(1), rule="nn") == 0.5


# ---------------------------------------------------------------- spectral normalization


def _spectral_norm_linear(style):
    torch.manual_seed(0)
    lin = nn.Linear(6, 4).double()
    if style == "hook":
        return nn.utils.spectral_norm(lin)
    return nn.utils.parametrizations.spectral_norm(lin)


def _normalized_weight(lin, style):
    """The weight the last train-mode pass used, without running the power iteration again."""
    if style == "hook":
        return lin.weight.detach().clone()  # set by the hook in that pass
    lin.eval()
    weight = lin.weight.detach().clone()  # eval mode: W / (u^T W v) with the stored u, v
    lin.train()
    return weight


@pytest.mark.parametrize("probe", ["finite_difference", "exact"])
@pytest.mark.parametrize("style", ["hook", "parametrization"])
def test_spectral_norm_vectors_are_kept_and_every_pass_uses_the_clean_weight(style, probe):
    lin = _spectral_norm_linear(style).train()
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 4, (8,))
    logits = lin(x)  # the caller's clean pass: its power iteration advances u and v once
    state = {k: v.clone() for k, v in lin.state_dict().items()}
    plain = nn.Linear(6, 4).double()
    with torch.no_grad():
        plain.weight.copy_(_normalized_weight(lin, style))
        plain.bias.copy_(lin.bias)
    torch.testing.assert_close(plain(x), logits, rtol=0, atol=0)
    kwargs = {"probe": probe, "reduction": "none"}
    lds = {}
    for eps in (1e-2, 1e-3):
        for with_logits in (False, True):
            got = vat_loss(lin, x, logits=logits if with_logits else None, eps=eps, generator=_gen(), **kwargs)
            ref = vat_loss(plain, x, logits=plain(x) if with_logits else None, eps=eps, generator=_gen(), **kwargs)
            torch.testing.assert_close(got, ref, rtol=1e-9, atol=0)
        lds[eps] = got
    assert bool((lds[1e-3] < 2e-2 * lds[1e-2]).all())  # LDS ~ eps^2: the perturbed passes use the clean weight
    torch.testing.assert_close(adversarial_loss(lin, x, y, eps=0.1), adversarial_loss(plain, x, y, eps=0.1))
    for k, v in lin.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert lin.training and all(m.training for m in lin.modules())
    # a later train-mode pass advances u again, and the graph of the LDS survives it
    lds = vat_loss(lin, x, eps=1e-2, probe=probe)
    (lds + lin(x).sum()).backward()
    key = "weight_u" if style == "hook" else "parametrizations.weight.0._u"
    assert not torch.equal(lin.state_dict()[key], state[key])
    original = lin.weight_orig if style == "hook" else lin.parametrizations.weight.original
    assert original.grad is not None


def _gen():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("style", ["hook", "parametrization"])
def test_spectral_norm_in_nested_guards_and_eval_mode(style):
    lin = _spectral_norm_linear(style).train()
    x = torch.randn(8, 6, dtype=torch.float64)
    lin(x)
    state = {k: v.clone() for k, v in lin.state_dict().items()}
    with frozen_batchnorm_stats(lin):
        vat_loss(lin, x, eps=1.0)  # an inner guard leaves the outer one's freeze in place
        lin(x)
    for k, v in lin.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(m.training for m in lin.modules())
    if style == "hook":
        assert all("compute_weight" not in vars(h) for h in lin._forward_pre_hooks.values())
    lin.eval()
    vat_loss(lin, x, eps=1.0)
    assert not any(m.training for m in lin.modules())
    lin.train()
    lin(x)
    key = "weight_u" if style == "hook" else "parametrizations.weight.0._u"
    assert not torch.equal(lin.state_dict()[key], state[key])  # the iteration runs again outside the guard
