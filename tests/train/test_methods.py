from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from torchvat.train import (
    Batch,
    CleanPass,
    Method,
    Supervised,
    Trainer,
    available_methods,
    get_method,
    register_method,
    unregister_method,
)

BUILTIN = ("supervised", "rpt", "at", "vat", "vat+ent", "at+vat", "pgd-at", "trades")
EXPECTED_TERMS = {
    "supervised": {"ce"},
    "rpt": {"ce", "rpt"},
    "at": {"ce", "at"},
    "vat": {"ce", "vat"},
    "vat+ent": {"ce", "vat", "ent"},
    "at+vat": {"ce", "at", "vat"},
    "pgd-at": {"pgd"},
    "trades": {"ce", "trades"},
}


class Recorder:
    def __init__(self):
        self.metrics = []

    def __call__(self, **kwargs):
        self.metrics.append(kwargs["metrics"])


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("regularize", ["unlabeled", "all"])
def test_every_method_returns_finite_named_terms(name, regularize, moons, mlp, tiny):
    from torchvat.train import Callback

    seen = []

    class Keep(Callback):
        def on_step_end(self, **kwargs):
            seen.append({k: v.clone() for k, v in kwargs["metrics"].items()})

    model = mlp(0, batch_norm=True, dropout=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(model, moons, method=name, regularize=regularize, callbacks=[Keep()], **tiny(iterations=3))
    result = trainer.fit()
    assert len(seen) == 3
    for metrics in seen:
        extra = {"unlabeled_classes"} if trainer.method.uses_unlabeled else set()
        assert set(metrics) == EXPECTED_TERMS[name] | {"loss", "acc"} | extra
        if extra:
            assert 1.0 <= metrics["unlabeled_classes"] <= 2.0 + 1e-6  # two moons: two classes
        assert all(v.ndim == 0 and torch.isfinite(v) for v in metrics.values())
        for term in EXPECTED_TERMS[name] - {"ce"}:
            assert metrics[term] >= 0
    for term in EXPECTED_TERMS[name]:
        assert math.isfinite(result.final[f"train_{term}"])
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_available_methods_lists_builtins():
    assert set(BUILTIN) <= set(available_methods())


def test_get_method_unknown_lists_known():
    with pytest.raises(ValueError, match=r"method must be one of .*'vat\+ent'.*got 'vta'"):
        get_method("vta")


def test_zero_weight_switches_regularizer_off():
    vat = get_method("vat", eps=1.0, alpha=0.0)
    assert vat.weights == {"ce": 1.0}
    assert not vat.uses_unlabeled
    assert get_method("vat+ent", eps=1.0, alpha=0.0, beta=0.5).weights == {"ce": 1.0, "ent": 0.5}
    assert get_method("rpt", eps=1.0, n_power=5).n_power == 0


def test_negative_weight_rejected():
    with pytest.raises(ValueError, match="alpha must be a number >= 0, got -1"):
        get_method("vat", eps=1.0, alpha=-1)


def test_registered_method_is_used_by_trainer(moons, mlp, tiny):
    class CenteredLogits(Method):
        name = "centered"

        def __init__(self, gamma: float = 0.1):
            self.weights = {"ce": 1.0, "center": gamma}

        @property
        def uses_unlabeled(self):
            return True

        def loss_terms(self, model, batch, clean):
            assert clean.has_unlabeled and clean.x.shape[0] == 8 + 16
            return {"ce": self.cross_entropy(batch, clean), "center": clean.logits.mean(1).pow(2).mean()}

    register_method("centered", CenteredLogits)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_method("centered", CenteredLogits)
        assert "centered" in available_methods()
        trainer = Trainer(mlp(), moons, method="centered", extra={"gamma": 0.5}, **tiny(iterations=4))
        assert trainer.method.weights["center"] == 0.5
        result = trainer.fit()
    finally:
        unregister_method("centered")
    assert "centered" not in available_methods()
    assert result.method == "centered"
    assert "train_center" in result.final


def test_method_instance_and_unweighted_term(moons, mlp, tiny):
    class Bad(Supervised):
        def loss_terms(self, model, batch, clean):
            return {"ce": self.cross_entropy(batch, clean), "extra": clean.logits.sum() * 0}

    with pytest.raises(ValueError, match=r"returned terms \['extra'\] without a weight"):
        Trainer(mlp(), moons, method=Bad(), **tiny()).fit()


def test_factory_must_return_method():
    register_method("not-a-method", lambda: object())
    try:
        with pytest.raises(TypeError, match=r"must return a torchvat\.train\.Method, got object"):
            get_method("not-a-method")
    finally:
        unregister_method("not-a-method")


def test_unregister_checks():
    with pytest.raises(ValueError, match="built-in method 'vat' cannot be unregistered"):
        unregister_method("vat")
    with pytest.raises(ValueError, match="method 'ghost' is not registered"):
        unregister_method("ghost")


def test_clean_pass_rows():
    x = torch.arange(10.0).view(5, 2)
    clean = CleanPass(x=x, logits=x * 2, n_labeled=2)
    xu, lu = clean.rows("unlabeled")
    assert torch.equal(xu, x[2:]) and torch.equal(lu, x[2:] * 2)
    assert clean.rows("all")[0].shape[0] == 5
    only_labeled = CleanPass(x=x[:2], logits=x[:2], n_labeled=2)
    assert only_labeled.rows("unlabeled")[0].shape[0] == 2
    with pytest.raises(ValueError, match="regularize must be 'unlabeled' or 'all', got 'some'"):
        clean.rows("some")


def test_method_without_eps_raises():
    model = nn.Linear(2, 2)
    x = torch.randn(4, 2)
    clean = CleanPass(x=x, logits=model(x), n_labeled=4)
    with pytest.raises(ValueError, match="eps is None"):
        get_method("vat").loss_terms(model, Batch(x, torch.zeros(4, dtype=torch.long)), clean)


@pytest.mark.parametrize("name", ["vat", "at", "vat+ent", "pgd-at", "trades"])
def test_perturbation_search_consumes_no_global_rng(name, moons, mlp, tiny):
    """With dropout, a regularized step draws exactly the random numbers of the clean pass.

    Without unlabeled data the regularizer sees the same rows as the supervised step, so the
    global generator must end where the supervised steps leave it, and the first step's BatchNorm
    statistics (same weights) must equal the supervised step's.
    """
    states, bn = {}, {}
    for method in ("supervised", name):
        model = mlp(0, batch_norm=True, dropout=0.3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = Trainer(
                model,
                x_labeled=moons.x_labeled,
                y_labeled=moons.y_labeled,
                method=method,
                regularize="all",
                **tiny(iterations=2),
            )
        trainer.train_step(trainer.next_batch())  # same weights before: same BN statistics
        bn[method] = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "batches" in k}
        trainer.step += 1
        trainer.train_step(trainer.next_batch())
        states[method] = torch.get_rng_state()
    assert torch.equal(states["supervised"], states[name])
    for key in bn["supervised"]:
        assert torch.equal(bn["supervised"][key], bn[name][key]), key
    assert int(bn[name]["1.num_batches_tracked"]) == 1


def test_extra_options_must_be_hyperparameters_of_the_method():
    from sklearn.datasets import make_moons

    from torchvat.train import Trainer, check_method_options, method_hyperparameters

    assert {"eps", "n_power", "alpha"} <= method_hyperparameters("vat")
    check_method_options("vat", {"n_power": 2})  # accepted
    x, y = make_moons(64, random_state=0)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    data = {"x_labeled": x[:8], "y_labeled": y[:8], "x_unlabeled": x}
    with pytest.raises(ValueError, match=r"method 'vat' takes the hyperparameters \[.*\], got \['n_powr'\] besides"):
        Trainer(nn.Linear(2, 2), **data, method="vat", eps=0.3, extra={"n_powr": 5}, progress=False)
    with pytest.raises(ValueError, match=r"extra must not repeat the config's own fields \['alpha'\]"):
        Trainer(nn.Linear(2, 2), **data, method="vat", eps=0.3, extra={"alpha": 2.0}, progress=False)


# pgd-at and trades


def _bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 2)).train()


def _moons_batch(n_labeled: int = 16, n_unlabeled: int = 0) -> Batch:
    torch.manual_seed(3)
    x = torch.randn(n_labeled + n_unlabeled, 2)
    y = (x[:n_labeled, 0] > 0).long()
    return Batch(x[:n_labeled], y, x[n_labeled:] if n_unlabeled else None)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_pgd_at_with_one_step_from_x_is_at(norm):
    from torchvat.train.trainer import compute_method_loss

    batch = _moons_batch()
    results = {}
    for name, options in (("at", {}), ("pgd-at", {"steps": 1, "random_start": False, "clean_weight": 1.0})):
        model = _bn_net()
        method = get_method(name, eps=0.4, norm=norm, **options)
        torch.manual_seed(5)
        results[name] = compute_method_loss(model, method, batch, method.weights, generator=torch.Generator())
    loss_at, terms_at, _ = results["at"]
    loss_pgd, terms_pgd, _ = results["pgd-at"]
    assert set(terms_pgd) == {"ce", "pgd"}
    assert torch.equal(terms_pgd["ce"], terms_at["ce"])
    assert torch.equal(terms_pgd["pgd"], terms_at["at"])
    assert torch.equal(loss_pgd, loss_at)


def test_pgd_at_more_steps_give_a_larger_adversarial_loss_than_one():
    from torchvat.train.trainer import compute_method_loss

    batch = _moons_batch(64)
    terms = {}
    for steps in (1, 10):
        model = _bn_net().eval()  # one value per sample: the best iterate is a per-sample maximum
        method = get_method("pgd-at", eps=0.5, steps=steps, random_start=False)
        terms[steps] = compute_method_loss(model, method, batch, method.weights)[1]["pgd"]
    assert terms[10] >= terms[1]


def test_trades_at_tiny_eps_has_a_zero_robust_term():
    from torchvat.train.trainer import compute_method_loss

    batch = _moons_batch(16, 32)
    for regularize in ("unlabeled", "all"):
        model = _bn_net()
        method = get_method("trades", eps=1e-7, regularize=regularize)
        _, terms, _ = compute_method_loss(model, method, batch, method.weights, generator=torch.Generator())
        assert set(terms) == {"ce", "trades"}
        assert 0.0 <= float(terms["trades"].detach()) < 1e-6, regularize  # float32 rounding
        model = _bn_net()
        method = get_method("trades", eps=2.0, regularize=regularize)
        _, terms, _ = compute_method_loss(model, method, batch, method.weights, generator=torch.Generator())
        assert float(terms["trades"].detach()) > 1e-4, regularize


def test_trades_beta_is_the_papers_and_its_term_backpropagates_through_the_clean_rows():
    from torchvat.train.methods import TRADES
    from torchvat.train.trainer import compute_method_loss

    assert TRADES().beta == 6.0 and get_method("trades", eps=0.1).weights == {"ce": 1.0, "trades": 6.0}
    assert get_method("trades", eps=0.1, beta=0.0).weights == {"ce": 1.0}
    assert not get_method("trades", eps=0.1, beta=0.0).uses_unlabeled
    method = get_method("trades", eps=0.5)
    assert method.uses_unlabeled and method.needs_unlabeled_grad and not method.joint_clean_pass
    _, _, clean = compute_method_loss(
        _bn_net(), method, _moons_batch(8, 16), method.weights, generator=torch.Generator()
    )
    assert clean.separate and clean.unlabeled_logits.requires_grad


@pytest.mark.parametrize(("name", "regularize"), [("pgd-at", "unlabeled"), ("trades", "unlabeled"), ("trades", "all")])
def test_pgd_at_and_trades_leave_grads_and_batchnorm_statistics_as_the_clean_pass_set_them(name, regularize):
    """The searches touch neither parameter .grad nor the BatchNorm statistics: only the clean passes do."""
    from torchvat.train.trainer import compute_method_loss

    batch = _moons_batch(16, 32)
    options = {"regularize": regularize} if name == "trades" else {}
    # the reference makes the same clean passes (rows and layout) and no search
    reference = get_method("trades", eps=0.5, beta=0.0, **options) if name == "trades" else get_method("supervised")
    stats, grads = {}, {}
    for key, method in (("supervised", reference), (name, get_method(name, eps=0.5, steps=5, **options))):
        model = _bn_net()
        for p in model.parameters():
            p.grad = torch.full_like(p, 0.5)
        one = batch if name == "trades" else Batch(batch.x_labeled, batch.y_labeled)
        compute_method_loss(model, method, one, method.weights, generator=torch.Generator())
        stats[key] = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "tracked" in k}
        grads[key] = [p.grad.clone() for p in model.parameters()]
        assert model.training
    for key in stats["supervised"]:
        assert torch.equal(stats["supervised"][key], stats[name][key]), key
    assert all(torch.equal(g, torch.full_like(g, 0.5)) for g in grads[name])


def test_pgd_at_and_trades_take_their_options_through_the_trainer(moons, mlp, tiny):
    trainer = Trainer(
        mlp(), moons, method="pgd-at", extra={"steps": 3, "clean_weight": 0.5, "clamp": [-3.0, 3.0]}, **tiny()
    )
    method = trainer.method
    assert (method.steps, method.clean_weight, method.clamp, method.weights) == (
        3,
        0.5,
        (-3.0, 3.0),
        {"ce": 0.5, "pgd": 1.0},
    )
    trainer = Trainer(mlp(), moons, method="trades", beta=6.0, extra={"steps": 2, "keep": "last"}, **tiny())
    assert (trainer.method.steps, trainer.method.keep, trainer.method.beta) == (2, "last", 6.0)
    with pytest.raises(ValueError, match=r"method 'vat' takes the hyperparameters .*got \['steps'\] besides"):
        Trainer(mlp(), moons, method="vat", extra={"steps": 3}, **tiny())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": 0}, "steps must be an integer >= 1, got 0"),
        ({"keep": "first"}, "keep must be one of 'best', 'last', got 'first'"),
        ({"clamp": (1.0, 0.0)}, r"clamp must be None or a pair \(lo, hi\)"),
        ({"clean_weight": -1.0}, "clean_weight must be a number >= 0, got -1.0"),
        ({"alpha": 0.0}, "alpha and clean_weight are both 0"),
        ({"random_start": 1}, "random_start must be a bool, got 1"),
    ],
)
def test_pgd_at_refuses_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        get_method("pgd-at", eps=0.1, **options)


def test_an_earlier_spelling_builds_the_method_it_names_with_a_deprecation_warning():
    from torchvat.train import get_method

    with pytest.warns(DeprecationWarning, match="'vat\\+at' is spelled 'at\\+vat'"):
        method = get_method("vat+at", eps=1.0)
    assert method.name == "at+vat"
