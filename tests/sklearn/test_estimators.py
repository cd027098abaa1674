"""Behaviour of VATClassifier and VATRegressor beyond scikit-learn's generic checks."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_moons
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from torchvat import params
from torchvat.core import suggest_eps
from torchvat.sklearn import VATClassifier, VATRegressor

FAST = {"hidden_layer_sizes": (16,), "max_iter": 60, "learning_rate_init": 0.01, "device": "cpu", "random_state": 0}


def engine_eps(X: np.ndarray, y_semi: np.ndarray, unlabeled_label: object = -1) -> float:
    """The trainer's eps rule on the estimator's data: every row in the pool, the labeled rows as references."""
    x = torch.tensor(X, dtype=torch.float32)
    return suggest_eps(x, rule="labeled", labeled=x[torch.from_numpy(np.asarray(y_semi) != unlabeled_label)])


@pytest.fixture(scope="module")
def moons() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X, y = make_moons(200, noise=0.1, random_state=0)
    X = StandardScaler().fit_transform(X)
    y_semi = y.copy()
    rng = np.random.RandomState(0)
    keep = np.r_[
        rng.choice(np.flatnonzero(y == 0), 4, replace=False), rng.choice(np.flatnonzero(y == 1), 4, replace=False)
    ]
    y_semi[np.setdiff1d(np.arange(200), keep)] = -1
    return X, y, y_semi


@pytest.fixture(scope="module")
def fitted(moons) -> VATClassifier:
    X, _, y_semi = moons
    return VATClassifier(**FAST).fit(X, y_semi)


def test_fitted_attributes(fitted, moons):
    X = moons[0]
    assert fitted.classes_.tolist() == [0, 1]
    assert fitted.n_features_in_ == 2
    assert fitted.n_iter_ == 60 and len(fitted.loss_curve_) == 60
    assert isinstance(fitted.module_, nn.Module) and not fitted.module_.training
    assert fitted.eps_ == pytest.approx(engine_eps(X, moons[2]))
    proba = fitted.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(fitted.predict(X), fitted.classes_[proba.argmax(1)])
    np.testing.assert_array_equal(fitted.decision_function(X) > 0, proba[:, 1] > 0.5)
    np.testing.assert_allclose(np.exp(fitted.predict_log_proba(X)), proba, rtol=1e-10)


def test_eps_follows_the_scale_of_x(moons):
    X, _, y_semi = moons
    small = VATClassifier(**FAST).fit(X, y_semi).eps_
    large = VATClassifier(**FAST).fit(10 * X, y_semi).eps_
    assert large == pytest.approx(10 * small, rel=1e-4)
    assert VATClassifier(**{**FAST, "eps": 0.3}).fit(X, y_semi).eps_ == 0.3


@pytest.mark.slow
def test_unlabeled_rows_help_on_moons(moons):
    X, y, y_semi = moons
    params = {**FAST, "hidden_layer_sizes": (32, 32), "max_iter": 300, "learning_rate_init": 3e-3}
    vat = VATClassifier(**params, eps=0.5).fit(X, y_semi)
    sup = VATClassifier(**params, method="supervised").fit(X, y_semi)
    assert vat.score(X, y) > sup.score(X, y)
    assert vat.score(X, y) > 0.9


def test_same_random_state_same_model_and_global_rng_untouched(moons):
    X, _, y_semi = moons
    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002 - the legacy global generator is what must stay untouched
    random.seed(123)
    expected = (torch.rand(1), np.random.rand(), random.random())  # noqa: NPY002
    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    a = VATClassifier(**FAST).fit(X, y_semi)
    assert (torch.rand(1), np.random.rand(), random.random()) == expected  # noqa: NPY002
    b = VATClassifier(**FAST).fit(X, y_semi)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    c = VATClassifier(**{**FAST, "random_state": 1}).fit(X, y_semi)
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))


def test_string_labels_and_custom_unlabeled_label(moons):
    X, y, y_semi = moons
    names = np.array(["left", "right"])[y]
    y_str = np.where(y_semi == -1, "-1", names)
    clf = VATClassifier(**FAST).fit(X, y_str)
    assert clf.classes_.tolist() == ["left", "right"]
    assert set(clf.predict(X)) <= {"left", "right"}
    y_custom = np.where(y_semi == -1, "?", names)
    clf2 = VATClassifier(**FAST, unlabeled_label="?").fit(X, y_custom)
    np.testing.assert_array_equal(clf2.predict_proba(X), clf.predict_proba(X))


def test_pandas_dataframe_keeps_feature_names(moons):
    X, _, y_semi = moons
    df = pd.DataFrame(X, columns=["a", "b"])
    clf = VATClassifier(**FAST).fit(df, pd.Series(y_semi))
    assert clf.feature_names_in_.tolist() == ["a", "b"]
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        from_array = clf.predict(X)
    np.testing.assert_array_equal(clf.predict(df), from_array)
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(pd.DataFrame(X, columns=["b", "a"]))


def test_pipeline_and_grid_search_over_eps(moons):
    X, y, y_semi = moons
    pipe = make_pipeline(StandardScaler(), VATClassifier(**FAST))
    search = GridSearchCV(pipe, {"vatclassifier__eps": [0.05, 0.5]}, cv=2, scoring="accuracy")
    labeled = y_semi != -1
    with pytest.warns(UserWarning, match="y contains no unlabeled samples"):  # every row labeled: supervised VAT
        search.fit(X[labeled].repeat(3, axis=0), y[labeled].repeat(3))
    assert search.best_params_["vatclassifier__eps"] in (0.05, 0.5)
    assert len(search.cv_results_["mean_test_score"]) == 2
    assert search.best_estimator_[-1].eps_ == search.best_params_["vatclassifier__eps"]


def test_get_set_params_and_clone():
    clf = VATClassifier(**FAST)
    assert clf.get_params()["max_iter"] == 60
    clf.set_params(eps=0.7, method="vat+ent")
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and twin is not clf


def test_pickle_after_fit(fitted, moons):
    X = moons[0]
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict_proba(X), fitted.predict_proba(X))
    assert restored.eps_ == fitted.eps_


def test_not_fitted_and_bad_input(moons):
    X, _, y_semi = moons
    with pytest.raises(NotFittedError):
        VATClassifier().predict(X)
    with pytest.raises(ValueError, match="requires y to be passed"):
        VATClassifier(**FAST).fit(X, None)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        VATClassifier(**FAST).fit(np.where(np.arange(400).reshape(200, 2) == 3, np.nan, X), y_semi)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        VATClassifier(**FAST).fit(X, y_semi[:-1])
    with pytest.raises(ValueError, match="no labeled rows"):
        VATClassifier(**FAST).fit(X, np.full(200, -1))
    with pytest.raises(ValueError, match="at least 2 classes, got 1 class"):
        VATClassifier(**FAST).fit(X, np.where(y_semi == 1, -1, y_semi))
    with pytest.raises(ValueError, match="Unknown label type"):
        VATClassifier(**FAST).fit(X, np.linspace(0, 1, 200))
    fitted = VATClassifier(**FAST).fit(X, y_semi)
    with pytest.raises(ValueError, match="X has 3 features, but VATClassifier is expecting 2 features"):
        fitted.predict(np.c_[X, X[:, :1]])


@pytest.mark.parametrize(
    ("param", "value", "match"),
    [
        # scikit-learn's wording (InvalidParameterError, a ValueError): the argument, the expected, the received
        ("method", "mixup", r"'method' parameter of VATClassifier must be a str among .*'vat'.*Got 'mixup' instead"),
        ("eps", -1.0, r"'eps' parameter of VATClassifier must be a float in the range \[0.0, inf\) or None\. Got -1.0"),
        (
            "max_iter",
            0,
            r"'max_iter' parameter of VATClassifier must be an int in the range \[1, inf\)\. Got 0 instead",
        ),
        ("hidden_layer_sizes", (16, 0), r"hidden_layer_sizes\[1\] must be an integer >= 1, got 0"),
        ("validation_fraction", 1.5, r"'validation_fraction' parameter .* range \(0.0, 1.0\)\. Got 1.5 instead"),
        ("learning_rate_init", -1.0, r"'learning_rate_init' parameter .* range \[0.0, inf\)\. Got -1.0 instead"),
        ("xi", 0, r"'xi' parameter .* range \(0.0, inf\) or a str among \{'auto'\}\. Got 0 instead"),
    ],
)
def test_invalid_parameters_name_the_argument(moons, param, value, match):
    X, _, y_semi = moons
    with pytest.raises(ValueError, match=match):
        VATClassifier(**{**FAST, param: value}).fit(X, y_semi)


def test_module_must_be_a_factory_of_modules(moons):
    X, _, y_semi = moons
    with pytest.raises(TypeError, match=r"'module' parameter of VATClassifier must be None or a callable\. Got 3"):
        VATClassifier(**{**FAST, "module": 3}).fit(X, y_semi)
    with pytest.raises(TypeError, match=r"must return a torch\.nn\.Module, got str"):
        VATClassifier(**{**FAST, "module": lambda d, k: "mlp"}).fit(X, y_semi)


def test_warns_without_unlabeled_rows_but_not_for_supervised(moons):
    X, y, _ = moons
    with pytest.warns(UserWarning, match="y contains no unlabeled samples"):
        VATClassifier(**FAST).fit(X, y)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        VATClassifier(**{**FAST, "method": "supervised"}).fit(X, y)


def test_custom_module_factory(moons):
    X, _, y_semi = moons
    seen = {}

    def factory(n_features: int, n_outputs: int) -> nn.Module:
        seen["shape"] = (n_features, n_outputs)
        return nn.Sequential(nn.Linear(n_features, 8), nn.Tanh(), nn.Linear(8, n_outputs))

    clf = VATClassifier(**{**FAST, "module": factory}).fit(X, y_semi)
    assert seen["shape"] == (2, 2)
    assert isinstance(clf.module_, nn.Sequential)


@pytest.mark.parametrize("method", sorted(params.BUILTIN_METHODS))  # the engine's every mode, pgd-at and trades too
def test_every_method_trains(moons, method):
    X, _, y_semi = moons
    clf = VATClassifier(**{**FAST, "method": method, "max_iter": 30}).fit(X, y_semi)
    assert clf.n_iter_ == 30
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert (clf.eps_ is None) == (method == "supervised")


def test_partial_fit_continues_training(moons):
    X, _, y_semi = moons
    clf = VATClassifier(**{**FAST, "batch_size": 8, "unlabeled_batch_size": 64})
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X, y_semi)
    clf.partial_fit(X, y_semi, classes=[0, 1])
    weights = [p.detach().clone() for p in clf.module_.parameters()]
    assert clf.n_iter_ == 4  # ceil(200 rows in the pool / 64) > ceil(8 labeled / 8)
    for _ in range(5):
        clf.partial_fit(X, y_semi)
    assert clf.n_iter_ == 24 and len(clf.loss_curve_) == 24
    assert any(not torch.equal(a, b) for a, b in zip(weights, clf.module_.parameters(), strict=True))
    with pytest.raises(ValueError, match="labels not in classes_"):
        clf.partial_fit(X, np.where(y_semi == 1, 2, y_semi))


def test_partial_fit_drops_the_unlabeled_marker_from_classes(moons):
    X, _, y_semi = moons
    clf = VATClassifier(**{**FAST, "batch_size": 8, "unlabeled_batch_size": 64})
    clf.partial_fit(X, y_semi, classes=np.unique(y_semi))  # np.unique of semi-supervised y holds -1
    assert clf.classes_.tolist() == [0, 1]
    assert clf.predict_proba(X).shape == (X.shape[0], 2) and set(clf.predict(X).tolist()) <= {0, 1}
    clf.partial_fit(X, y_semi, classes=np.unique(y_semi))  # the same classes again: accepted


def test_partial_fit_with_early_stopping_trains_on_every_labeled_row(moons):
    X, _, y_semi = moons
    clf = VATClassifier(**{**FAST, "early_stopping": True, "validation_fraction": 0.5})
    clf.partial_fit(X, y_semi, classes=[0, 1])
    assert clf.n_iter_ >= 1 and not hasattr(clf, "validation_scores_")  # no rows held out, no evaluation


def test_warm_start_continues_from_the_fitted_module(moons):
    X, _, y_semi = moons
    clf = VATClassifier(**{**FAST, "warm_start": True}).fit(X, y_semi)
    module = clf.module_
    clf.fit(X, y_semi)
    assert clf.module_ is module and clf.n_iter_ == 120
    cold = VATClassifier(**FAST).fit(X, y_semi)
    first = cold.module_
    cold.fit(X, y_semi)
    assert cold.module_ is not first and cold.n_iter_ == 60


def test_early_stopping_keeps_the_best_weights(moons):
    X, y, _ = moons
    y_semi = y.copy()
    y_semi[100:] = -1
    clf = VATClassifier(**{**FAST, "max_iter": 400, "early_stopping": True, "n_iter_no_change": 3}).fit(X, y_semi)
    assert clf.n_iter_ <= 400
    assert len(clf.validation_scores_) >= 1
    assert max(clf.validation_scores_) == pytest.approx(1 - min(1 - s for s in clf.validation_scores_))
    assert 0 < clf.best_iteration_ <= clf.n_iter_
    with pytest.raises(ValueError, match=r"early_stopping held out every labeled row of the classes \[[01]\]"):
        VATClassifier(**{**FAST, "early_stopping": True}).fit(X, np.r_[0, 1, np.full(198, -1)])
    with pytest.raises(ValueError, match="early_stopping needs at least 2 labeled rows"):
        VATRegressor(**{**FAST, "early_stopping": True}).fit(X, np.r_[0.5, np.full(199, np.nan)])


# ----------------------------------------------------------------------------- regressor
@pytest.fixture(scope="module")
def sine() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(0)
    X = rng.uniform(-3, 3, size=(200, 1))
    return X, 50 + 20 * np.sin(X[:, 0])


@pytest.mark.slow
def test_regressor_fits_in_the_units_of_y(sine):
    X, y = sine
    y_semi = y.copy()
    y_semi[40:] = np.nan
    reg = VATRegressor(hidden_layer_sizes=(32, 32), max_iter=400, learning_rate_init=0.01, random_state=0)
    reg.set_params(device="cpu").fit(X, y_semi)
    assert reg.score(X, y) > 0.9
    assert abs(reg.predict(X).mean() - y.mean()) < 3
    assert reg.eps_ > 0


@pytest.mark.parametrize("method", ["vat", "at", "rpt", "supervised"])
def test_regressor_methods(sine, method):
    X, y = sine
    reg = VATRegressor(**{**FAST, "method": method, "max_iter": 30})
    y_semi = np.where(np.arange(200) < 50, y, -999.0)
    reg.set_params(unlabeled_label=-999.0).fit(X, y_semi)
    assert reg.n_iter_ == 30 and reg.loss_curve_[-1] < reg.loss_curve_[0]
    with pytest.raises(ValueError, match=r"'method' parameter of VATRegressor must be a str among .*Got 'vat\+ent'"):
        VATRegressor(**{**FAST, "method": "vat+ent"}).fit(X, y)


def test_regressor_partial_fit_pickle_and_errors(sine):
    X, y = sine
    reg = VATRegressor(**FAST)
    for _ in range(2):
        with pytest.warns(UserWarning, match="y contains no unlabeled samples"):  # every call says so
            reg.partial_fit(X, y)
    assert reg.n_iter_ == 14  # 2 x ceil(200 / 32)
    restored = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(restored.predict(X), reg.predict(X))
    with pytest.raises(ValueError, match="Input y contains infinity"):
        VATRegressor(**FAST).fit(X, np.where(np.arange(200) == 0, np.inf, y))
    with pytest.raises(ValueError, match="y must hold real numbers"):
        VATRegressor(**FAST).fit(X, np.array(["a"] * 200, dtype=object))


def test_regressor_early_stopping(sine):
    X, y = sine
    y_semi = np.where(np.arange(200) < 100, y, np.nan)
    reg = VATRegressor(**{**FAST, "max_iter": 200, "early_stopping": True, "n_iter_no_change": 2}).fit(X, y_semi)
    assert len(reg.validation_scores_) >= 1
    assert min(reg.validation_scores_) >= 0  # mean squared errors on standardized targets
    assert 0 < reg.best_iteration_ <= reg.n_iter_ <= 200


def test_score_leaves_the_unlabeled_rows_out(moons):
    X, y, y_semi = moons
    clf = VATClassifier(**FAST).fit(X, y_semi)
    labeled = y_semi != -1
    assert clf.score(X, y_semi) == pytest.approx(float((clf.predict(X[labeled]) == y_semi[labeled]).mean()))
    assert clf.score(X, y) == pytest.approx(float((clf.predict(X) == y).mean()))  # fully labeled: all rows
    with pytest.raises(ValueError, match="y has no labeled rows to score"):
        clf.score(X, np.full_like(y, -1))


def test_grid_search_scores_semi_supervised_labels(moons):
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    X, y, _ = moons
    y_semi = y.copy()
    y_semi[::2] = -1  # half unlabeled, spread over every fold
    search = GridSearchCV(
        VATClassifier(**{**FAST, "max_iter": 20}), {"alpha": [0.0, 1.0]}, cv=StratifiedKFold(2), error_score="raise"
    )
    search.fit(X, y_semi)
    assert search.best_score_ > 0.5  # counting the unlabeled rows as errors kept it below 0.5


# ------------------------------------------------------------- eps across warm starts
def _record_trainer_eps(clf: VATClassifier) -> list:
    """Make ``clf`` record the eps of the method each of its trainers trains with."""
    from torchvat.train import Trainer

    seen: list = []

    class Recording(Trainer):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            seen.append(self.eps)

    clf._trainer_class = Recording
    return seen


@pytest.mark.parametrize("incremental", [False, True], ids=["warm_start", "partial_fit"])
def test_a_new_eps_from_set_params_is_used_by_the_next_warm_fit(moons, incremental):
    X, _, y_semi = moons
    clf = VATClassifier(**{**FAST, "max_iter": 5, "warm_start": True})
    seen = _record_trainer_eps(clf)
    fit = (lambda: clf.partial_fit(X, y_semi, classes=[0, 1])) if incremental else (lambda: clf.fit(X, y_semi))
    fit()
    derived = clf.eps_
    assert derived == pytest.approx(engine_eps(X, y_semi))
    clf.set_params(eps=0.5)
    fit()
    assert clf.eps_ == 0.5 and seen[-1] == 0.5
    clf.set_params(eps=None)  # back to the derived one
    fit()
    assert clf.eps_ == derived and seen[-1] == derived


def test_a_warm_switch_from_supervised_derives_eps_by_the_engines_rule(moons):
    X, _, y_semi = moons
    clf = VATClassifier(**{**FAST, "max_iter": 5, "warm_start": True, "method": "supervised"}).fit(X, y_semi)
    assert clf.eps_ is None
    seen = _record_trainer_eps(clf)
    clf.set_params(method="vat").fit(X, y_semi)
    assert clf.eps_ == pytest.approx(engine_eps(X, y_semi))
    assert seen == [clf.eps_]  # the trainer derived it and trains with it
    clf.set_params(method="supervised").fit(X, y_semi)
    assert clf.eps_ is None


def test_partial_fit_keeps_the_eps_derived_on_its_first_call(moons):
    X, _, y_semi = moons
    clf = VATClassifier(**{**FAST, "batch_size": 8, "unlabeled_batch_size": 64})
    seen = _record_trainer_eps(clf)
    clf.partial_fit(X[:100], y_semi[:100], classes=[0, 1])
    first = clf.eps_
    clf.partial_fit(3 * X[100:], y_semi[100:])  # another chunk, on another scale: the same eps
    assert clf.eps_ == first and seen == [first, first]
    cold = VATClassifier(**FAST).fit(3 * X, y_semi)  # a cold fit derives it from its own rows
    assert cold.eps_ == pytest.approx(engine_eps(3 * X, y_semi))


def test_vat_ent_with_alpha_zero_still_uses_the_unlabeled_rows(moons):
    X, y, y_semi = moons
    params = {**FAST, "method": "vat+ent", "alpha": 0.0, "beta": 1.0, "batch_size": 8, "unlabeled_batch_size": 64}
    clf = VATClassifier(**params).partial_fit(X, y_semi, classes=[0, 1])
    assert clf.n_iter_ == 4  # ceil(200 rows in the pool / 64): the entropy term draws unlabeled batches
    with pytest.warns(UserWarning, match="y contains no unlabeled samples .* method 'vat\\+ent'"):
        VATClassifier(**{**params, "max_iter": 3}).fit(X, y)
    import warnings

    with warnings.catch_warnings():  # with beta=0 too, nothing uses unlabeled rows
        warnings.simplefilter("error")
        VATClassifier(**{**params, "beta": 0.0, "max_iter": 3}).fit(X, y)


# ------------------------------------------------------------- one engine (issue 16)
def _table(n_features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three Gaussian classes in ``n_features`` dimensions, 12 labels, the other 108 rows unlabeled."""
    rng = np.random.RandomState(seed)
    y = np.repeat(np.arange(3), 40)
    X = (rng.normal(size=(120, n_features)) + 2.0 * np.eye(3, n_features)[y]).astype(np.float32)
    y_semi = np.full(120, -1)
    keep = np.r_[0:4, 40:44, 80:84]
    y_semi[keep] = y[keep]
    return X, y, y_semi


@pytest.mark.parametrize("n_features", [2, 20], ids=["small-mlp", "mlp-batchnorm"])
@pytest.mark.parametrize("method", ["vat", "supervised"])
def test_the_same_predictions_through_the_trainer_and_the_estimator(n_features, method):
    """The estimator is a door onto the trainer: same data, seed, settings and dtype, same model."""
    from torchvat.models import default_model
    from torchvat.train import Trainer, seed_everything

    X, _, y_semi = _table(n_features)
    clf = VATClassifier(max_iter=40, method=method, random_state=3, device="cpu").fit(X, y_semi)

    labeled = y_semi != -1
    seed_everything(3)
    model = default_model((n_features,), n_classes=3)
    trainer = Trainer(
        model,
        x_labeled=torch.from_numpy(X[labeled]),
        y_labeled=torch.from_numpy(y_semi[labeled]),
        x_unlabeled=torch.from_numpy(X),  # the engine's pool: every row, the labeled ones too
        method=method,
        iterations=40,
        seed=3,
        device="cpu",
        progress=False,
    )
    trainer.fit()
    assert clf.eps_ == trainer.eps
    proba = torch.softmax(trainer.predict_logits(torch.from_numpy(X)).double(), dim=1).numpy()
    np.testing.assert_allclose(clf.predict_proba(X), proba, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(clf.predict(X), proba.argmax(1))
    assert clf.n_iter_ == trainer.step == 40


def test_the_default_network_is_the_engines_for_the_number_of_features():
    from torchvat.models import MLP, default_model, scaled_hidden_sizes

    def batch_norm(module: nn.Module) -> bool:
        return any(isinstance(m, nn.BatchNorm1d) for m in module.modules())

    params = {"max_iter": 2, "device": "cpu", "random_state": 0}
    for n_features in (2, 20):
        X, _, y_semi = _table(n_features)
        engine = default_model((n_features,), n_classes=3)
        clf = VATClassifier(**params).fit(X, y_semi)
        assert isinstance(clf.module_, MLP) and clf.module_.hidden_sizes == engine.hidden_sizes
        assert batch_norm(clf.module_) == batch_norm(engine) == (n_features > 16)
        # hidden_layer_sizes replaces the widths; the batch normalization stays the engine's choice
        sized = VATClassifier(**params, hidden_layer_sizes=(8, 4)).fit(X, y_semi)
        assert sized.module_.hidden_sizes == (8, 4) and batch_norm(sized.module_) == (n_features > 16)
    assert clf.module_.hidden_sizes == scaled_hidden_sizes(20)


def test_the_unlabeled_pool_holds_every_row_but_the_held_out_ones(moons):
    from torchvat.train import Trainer

    X, _, y_semi = moons
    pools: list[int] = []

    class Recording(Trainer):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            pools.append(int(self.x_unlabeled.shape[0]))

    for early_stopping in (False, True):
        clf = VATClassifier(**{**FAST, "max_iter": 2, "early_stopping": early_stopping, "validation_fraction": 0.25})
        clf._trainer_class = Recording
        clf.fit(X, y_semi)
    assert pools == [200, 198]  # with early stopping, ceil(0.25 * 8) = 2 labeled rows held out of both


def test_fit_leaves_the_global_random_state_as_it_found_it(moons):
    X, _, y_semi = moons
    torch.manual_seed(5)
    np.random.seed(5)  # noqa: NPY002 - the legacy global generator is what must stay untouched
    random.seed(5)
    torch.rand(3), np.random.rand(), random.random()  # noqa: NPY002 - somewhere inside the streams
    before = (torch.get_rng_state(), np.random.get_state(), random.getstate())  # noqa: NPY002
    clf = VATClassifier(**{**FAST, "max_iter": 5})
    clf.fit(X, y_semi)
    clf.partial_fit(X, y_semi)
    torch_after, numpy_after, python_after = torch.get_rng_state(), np.random.get_state(), random.getstate()  # noqa: NPY002
    assert torch.equal(torch_after, before[0])
    assert numpy_after[0] == before[1][0] and np.array_equal(numpy_after[1], before[1][1])
    assert numpy_after[2:] == before[1][2:]
    assert python_after == before[2]


def test_estimators_pickled_before_the_engine_change_still_load_and_refit():
    """Estimators pickled at e0e278c (batch_norm=False MLP, eps rule 'nn') predict and keep training."""
    from pathlib import Path

    with open(Path(__file__).with_name("data") / "estimators_before_issue16.pkl", "rb") as f:
        saved = pickle.load(f)
    clf, reg = saved["classifier"], saved["regressor"]
    np.testing.assert_array_equal(clf.predict_proba(saved["X"]), saved["proba"])
    np.testing.assert_array_equal(reg.predict(saved["Xr"]), saved["pred"])
    old_eps = clf.eps_
    clf.set_params(warm_start=True).fit(saved["X"], saved["y_semi"])  # the saved network and eps go on
    assert clf.n_iter_ == 40 and clf.eps_ == old_eps
    clf.partial_fit(saved["X"], saved["y_semi"])
    reg.partial_fit(saved["Xr"], saved["yr"])
    assert reg.n_iter_ > 20
    refit = clone(clf).set_params(warm_start=False, max_iter=5).fit(saved["X"], saved["y_semi"])
    assert refit.module_.hidden_sizes == (8,)  # its hidden_layer_sizes, on the engine's network


@pytest.mark.parametrize(
    ("n_features", "expected"), [(2, "unlabeled"), (20, "unlabeled")], ids=["small-mlp", "mlp-batchnorm"]
)
def test_the_regularized_rows_are_the_engines_for_the_network(n_features, expected):
    """The engine's regularize default, resolved by the engine for the network, as Trainer does."""
    from torchvat.train import Trainer

    seen = {}

    class Recording(Trainer):
        def __init__(self, model, **kwargs):
            super().__init__(model, **kwargs)
            seen["method"], seen["config"] = self.method.regularize, self.config.regularize

    X, _, y_semi = _table(n_features)
    clf = VATClassifier(max_iter=2, random_state=0, device="cpu")
    clf._trainer_class = Recording
    clf.fit(X, y_semi)
    assert seen == {"method": expected, "config": expected}
