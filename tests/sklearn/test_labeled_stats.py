"""The estimators' ``labeled_stats``: passed to the engine, checked, and absent from older pickles."""

import pickle

import numpy as np
import pytest
import torch

from torchvat.sklearn import VATClassifier, VATRegressor


@pytest.fixture
def wide():
    """32 features (the engine's vector network has BatchNorm above 16), 3 classes, 12 labels."""
    rng = np.random.RandomState(0)
    y = rng.randint(0, 3, 120)
    x = (rng.randn(120, 32) + 2.0 * y[:, None]).astype(np.float32)
    y_semi = np.full(120, -1)
    y_semi[:12] = y[:12]
    return x, y_semi


def _fit(x, y, **params):
    return VATClassifier(max_iter=5, random_state=0, device="cpu", **params).fit(x, y)


def test_labeled_stats_reaches_the_engine(wide):
    x, y = wide
    own, shared = _fit(x, y), _fit(x, y, labeled_stats="unlabeled")
    assert own.get_params()["labeled_stats"] == "own"
    bn = [m for m in own.module_.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert bn, "the engine's network for 32 features has BatchNorm"
    # different running statistics: the labeled passes' against the unlabeled passes'
    own_mean = next(m for m in own.module_.modules() if isinstance(m, torch.nn.BatchNorm1d)).running_mean
    shared_mean = next(m for m in shared.module_.modules() if isinstance(m, torch.nn.BatchNorm1d)).running_mean
    assert not torch.allclose(own_mean, shared_mean)


def test_bad_labeled_stats_is_refused_with_its_name(wide):
    x, y = wide
    with pytest.raises(ValueError, match="labeled_stats"):
        _fit(x, y, labeled_stats="batch")
    with pytest.raises(ValueError, match="labeled_stats"):
        VATRegressor(labeled_stats=None, max_iter=2).fit(x, np.where(y < 0, np.nan, y).astype(float))


def test_an_estimator_pickled_before_labeled_stats_loads_with_own(wide):
    x, y = wide
    est = _fit(x, y)
    del est.__dict__["labeled_stats"]  # as an estimator pickled before the parameter existed
    restored = pickle.loads(pickle.dumps(est))
    assert restored.labeled_stats == "own"
    np.testing.assert_array_equal(restored.predict(x), est.predict(x))
    restored.set_params(max_iter=2).fit(x, y)  # refits with the parameter in place


def test_labeled_folds_choose_labeled_stats(wide):
    from sklearn.model_selection import GridSearchCV

    from torchvat.sklearn import LabeledKFold

    x, y = wide
    search = GridSearchCV(
        VATClassifier(max_iter=3, random_state=0, device="cpu"),
        {"labeled_stats": ["own", "unlabeled"]},
        cv=LabeledKFold(n_splits=2, shuffle=False),
    ).fit(x, y)
    assert search.best_params_["labeled_stats"] in ("own", "unlabeled")
    assert len(search.cv_results_["mean_test_score"]) == 2
    assert search.best_estimator_.labeled_stats == search.best_params_["labeled_stats"]
