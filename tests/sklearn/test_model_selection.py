"""LabeledKFold: folds of the labeled rows, every unlabeled row in every training fold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from torchvat.sklearn import LabeledKFold, VATClassifier, VATRegressor


def _semi(n: int = 60, n_labeled: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 3)
    y = (x[:, 0] > 0).astype(int)
    y_semi = np.full(n, -1)
    # as many labeled rows of each class (n_labeled / 2)
    keep = np.concatenate([rng.choice(np.flatnonzero(y == c), n_labeled // 2, replace=False) for c in (0, 1)])
    y_semi[keep] = y[keep]
    return x, y_semi


@pytest.mark.parametrize("shuffle", [True, False])
def test_each_labeled_row_is_tested_once_and_unlabeled_rows_always_train(shuffle: bool) -> None:
    x, y = _semi()
    cv = LabeledKFold(4, shuffle=shuffle, random_state=0 if shuffle else None)
    unlabeled = set(np.flatnonzero(y == -1).tolist())
    tested: list[int] = []
    for train, test in cv.split(x, y):
        assert unlabeled <= set(train.tolist())
        assert not set(test.tolist()) & unlabeled
        assert not set(test.tolist()) & set(train.tolist())
        assert len(train) + len(test) == len(y)
        assert (np.diff(train) > 0).all() and (np.diff(test) > 0).all()
        tested += test.tolist()
    assert sorted(tested) == np.flatnonzero(y != -1).tolist()
    assert cv.get_n_splits() == 4


def test_folds_are_stratified_by_class() -> None:
    y = np.array([0] * 8 + [1] * 4 + [-1] * 20)
    for _, test in LabeledKFold(4, random_state=0).split(None, y):
        assert np.bincount(y[test]).tolist() == [2, 1]


def test_regression_targets_with_nan_unlabeled() -> None:
    y = np.array([0.5, np.nan, 1.5, np.nan, 2.5, 3.5, np.nan, 4.5])
    splits = list(LabeledKFold(5, stratify=False, random_state=0, unlabeled_label=np.nan).split(None, y))
    assert len(splits) == 5
    for train, test in splits:
        assert {1, 3, 6} <= set(train.tolist())
        assert np.isfinite(y[test]).all() and len(test) == 1


def test_the_shuffle_follows_random_state() -> None:
    x, y = _semi()
    first = [t.tolist() for _, t in LabeledKFold(3, random_state=1).split(x, y)]
    again = [t.tolist() for _, t in LabeledKFold(3, random_state=1).split(x, y)]
    other = [t.tolist() for _, t in LabeledKFold(3, random_state=2).split(x, y)]
    assert first == again
    assert first != other


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_splits": 1}, "n_splits must be an integer >= 2, got 1"),
        ({"n_splits": 2.5}, "n_splits must be an integer >= 2, got 2.5"),
        ({"n_splits": True}, "n_splits must be an integer >= 2, got True"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LabeledKFold(**kwargs)
    with pytest.raises(TypeError, match="shuffle must be True or False, got 'yes'"):
        LabeledKFold(shuffle="yes")  # type: ignore[arg-type]  # the wrong type is what is tested


def test_split_names_what_is_missing() -> None:
    with pytest.raises(ValueError, match="needs y"):
        list(LabeledKFold().split(np.zeros((4, 1))))
    with pytest.raises(ValueError, match="n_splits=5 needs at least 5 labeled rows, got 3"):
        list(LabeledKFold().split(None, np.array([0, 1, 0, -1, -1, -1])))
    with pytest.raises(ValueError, match="same number of rows, got 3 and 4"):
        list(LabeledKFold(2).split(np.zeros((3, 1)), np.array([0, 1, 0, 1])))


class _LabeledOnlyScorer:
    """A scorer that records the labels it is given (they must all be labeled)."""

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def __call__(self, estimator: VATClassifier, x: np.ndarray, y: np.ndarray) -> float:
        self.seen.append(np.asarray(y))
        return float((estimator.predict(x) == y).mean())


def test_cross_val_score_scores_labeled_rows_and_trains_on_unlabeled_ones() -> None:
    x, y = _semi(n=80, n_labeled=24)
    scorer = _LabeledOnlyScorer()
    est = make_pipeline(StandardScaler(), VATClassifier(max_iter=30, random_state=0, device="cpu"))
    scores = cross_val_score(est, x, y, cv=LabeledKFold(3, random_state=0), scoring=scorer)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    assert len(scorer.seen) == 3 and all((s != -1).all() for s in scorer.seen)
    assert sum(len(s) for s in scorer.seen) == 24


def test_grid_search_over_eps_picks_from_the_grid() -> None:
    x, y = _semi(n=80, n_labeled=24)
    search = GridSearchCV(
        VATClassifier(max_iter=20, random_state=0, device="cpu"),
        {"eps": [0.1, 1.0]},
        cv=LabeledKFold(3, random_state=0),
    )
    search.fit(x, y)
    assert search.best_params_["eps"] in (0.1, 1.0)
    assert len(search.cv_results_["mean_test_score"]) == 2
    # refit on every row, the unlabeled ones included
    assert search.best_estimator_.eps_ == search.best_params_["eps"]


def test_regressor_cross_validates_on_labeled_targets() -> None:
    rng = np.random.RandomState(0)
    x = rng.randn(40, 2)
    y = x[:, 0] * 2.0
    y[rng.choice(40, 25, replace=False)] = np.nan
    scores = cross_val_score(
        VATRegressor(max_iter=20, random_state=0, device="cpu"),
        x,
        y,
        cv=LabeledKFold(3, stratify=False, random_state=0, unlabeled_label=np.nan),
        scoring="neg_mean_squared_error",
    )
    assert np.isfinite(scores).all() and scores.shape == (3,)
