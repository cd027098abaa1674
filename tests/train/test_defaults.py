"""The engine's defaults (torchvat.train.defaults): regularize="auto" and the eps rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from torchvat import suggest_eps
from torchvat.models import TrimmedBatchNorm1d, default_model
from torchvat.train import TrainConfig, Trainer, seed_everything
from torchvat.train.defaults import DEFAULT_REGULARIZE, derive_eps, has_batch_norm, resolve_regularize


def _trainer(model, moons, **options):
    return Trainer(model, moons, iterations=2, progress=False, device="cpu", **options)


def test_config_default_is_separate_passes_and_auto_is_opt_in():
    # "auto" collapsed on Fashion-MNIST with 100 labels (BENCHMARKS.md §6): not the default
    assert TrainConfig().regularize == "unlabeled" == DEFAULT_REGULARIZE


def test_auto_resolves_to_all_with_batchnorm(moons, mlp):
    model = mlp(batch_norm=True)
    assert has_batch_norm(model)
    trainer = _trainer(model, moons, method="vat", regularize="auto")
    assert trainer.config.regularize == "all"
    assert trainer.method.regularize == "all" and trainer.method.joint_clean_pass
    # recorded as the resolved value: in the result and in the checkpoint's hyperparameters
    assert trainer.fit().config["regularize"] == "all"
    assert trainer.state_dict()["config"]["regularize"] == "all"


def test_auto_resolves_to_unlabeled_without_batchnorm(moons, mlp):
    model = mlp(batch_norm=False)
    assert not has_batch_norm(model)
    trainer = _trainer(model, moons, method="vat", regularize="auto")
    assert trainer.config.regularize == "unlabeled"
    assert trainer.method.regularize == "unlabeled" and not trainer.method.joint_clean_pass


@pytest.mark.parametrize("given", ["unlabeled", "all"])
def test_explicit_regularize_is_kept(moons, mlp, given):
    assert _trainer(mlp(batch_norm=True), moons, regularize=given).config.regularize == given
    assert _trainer(mlp(batch_norm=False), moons, regularize=given).config.regularize == given


def test_resolve_regularize_rejects_unknown_values():
    with pytest.raises(ValueError, match="regularize must be one of 'auto', 'unlabeled', 'all', got 'labeled'"):
        resolve_regularize("labeled", nn.Linear(2, 2))


def test_resumed_run_keeps_its_saved_regularize(moons, mlp):
    # a run saved with separate passes (as every run before "auto" was) on a BatchNorm model
    saved = _trainer(mlp(batch_norm=True), moons, regularize="unlabeled")
    saved.fit()
    state = saved.state_dict()
    resumed = _trainer(mlp(batch_norm=True), moons, regularize="auto")  # "auto" gives "all" here
    assert resumed.config.regularize == "all"
    resumed.load_state_dict(state)
    assert resumed.config.regularize == "unlabeled"
    assert resumed.method.regularize == "unlabeled" and not resumed.method.joint_clean_pass
    # an explicit value given to the resuming trainer wins, as every other hyperparameter does
    explicit = _trainer(mlp(batch_norm=True), moons, regularize="all")
    explicit.load_state_dict(state)
    assert explicit.config.regularize == "all"


def test_derive_eps_is_the_labeled_rule_and_the_trainers(moons, mlp):
    x_l, x_u = moons.x_labeled, moons.x_unlabeled
    eps = derive_eps(x_l, x_u)
    assert eps == pytest.approx(float(suggest_eps(x_u, rule="labeled", labeled=x_l)))
    assert _trainer(mlp(), moons).eps == pytest.approx(eps)
    assert derive_eps(x_l, None) == pytest.approx(float(suggest_eps(x_l, rule="labeled")))


@pytest.mark.slow
def test_trimmed_batchnorm_keeps_vat_above_supervised_with_few_labels():
    """digits standardized, 50 labels: the MLP with trimmed BatchNorm statistics keeps VAT above supervised.

    With plain BatchNorm (the default) the separate passes fall below supervised training (a few
    rows far out on near-constant pixels set the statistics of their batches) and only the joint
    pass (``regularize="auto"``) is above it; trimming the batch statistics lifts the default layout.
    """
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x = StandardScaler().fit_transform(x).astype(np.float32)
    rng = np.random.RandomState(0)
    perm = rng.permutation(len(x))
    test, train = perm[:500], perm[500:]
    labeled = np.concatenate([rng.choice(train[y[train] == c], 5, replace=False) for c in range(10)])

    def accuracy(trim: bool = True, **options):
        seed_everything(0)
        model = default_model((64,), 10, bn_trim=5.0) if trim else default_model((64,), 10)
        assert has_batch_norm(model)
        assert any(isinstance(m, TrimmedBatchNorm1d) for m in model.modules()) == trim
        trainer = Trainer(
            model,
            x_labeled=torch.from_numpy(x[labeled]),
            y_labeled=torch.from_numpy(y[labeled]),
            x_unlabeled=torch.from_numpy(x[train]),
            x_test=torch.from_numpy(x[test]),
            y_test=torch.from_numpy(y[test]),
            iterations=500,
            eval_every=500,
            collapse_patience=0,
            progress=False,
            device="cpu",
            **options,
        )
        return trainer.fit().final["test_accuracy"]

    supervised = max(accuracy(method="supervised"), accuracy(method="supervised", trim=False))
    trimmed = accuracy(method="vat")
    plain = accuracy(method="vat", trim=False)  # the engine's defaults
    joint_plain = accuracy(method="vat", regularize="auto", trim=False)
    # measured: trimmed 81.0% against supervised 75.2% (trimmed) / 77.2% (plain), plain BatchNorm 76.6%;
    # with plain BatchNorm the joint pass gives 88.4%
    assert trimmed > supervised + 0.02
    assert trimmed > plain + 0.03
    assert joint_plain > plain + 0.10


@pytest.mark.parametrize(("method", "weight"), [("trades", 6.0), ("vat+ent", 1.0)])
def test_beta_none_is_the_methods_own_default(moons, mlp, method, weight):
    # TrainConfig.beta=None: TRADES gets Zhang et al.'s 6, vat+ent its entropy weight 1 (before, the config's
    # 1.0 reached TRADES through the Trainer, the CLI and the estimators, while get_method gave 6)
    trainer = _trainer(mlp(), moons, method=method, eps=0.5)
    assert TrainConfig().beta is None
    assert trainer.method.beta == weight
    assert _trainer(mlp(), moons, method=method, eps=0.5, beta=2.0).method.beta == 2.0
