"""The BatchNorm guard, RNG snapshots, the data-derived eps and the public API."""

import math

import pytest
import torch
from torch import nn

import torchvat
from torchvat import RNGSnapshot, frozen_batchnorm_stats, suggest_eps


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
        (torch.ones(4, 2), {"rule": "labeled", "labeled": torch.ones(2, 2)}, ValueError, r"x and labeled coincide"),
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
    else:
        pytest.fail(f"public name {name} has no smoke test")
