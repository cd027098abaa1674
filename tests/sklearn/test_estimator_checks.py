"""scikit-learn's own estimator checks on VATClassifier and VATRegressor."""

from __future__ import annotations

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from torchvat.sklearn import VATClassifier, VATRegressor

# scikit-learn >= 1.6 declares expected failures to parametrize_with_checks (the former
# ``_xfail_checks`` tag was removed); each entry gives the reason.
EXPECTED_FAILED_CHECKS = {
    "VATClassifier": {
        "check_classifiers_classes": (
            "the check trains on the class labels [-1, 1]; y == -1 marks unlabeled rows "
            "(scikit-learn's semi-supervised convention), so that problem has a single class. "
            "Pass unlabeled_label=<another value> to use -1 as a class."
        ),
    },
}

ESTIMATORS = [
    VATClassifier(hidden_layer_sizes=(16,), max_iter=100, learning_rate_init=0.01, device="cpu"),
    VATRegressor(hidden_layer_sizes=(16,), max_iter=100, learning_rate_init=0.01, device="cpu"),
]


# check_array_api_input only applies to estimators that declare array API support (these
# take numpy/pandas input and compute in torch); scikit-learn would yield it as a skip.
NOT_APPLICABLE = {"check_array_api_input"}


def _applicable(mark: pytest.MarkDecorator) -> pytest.MarkDecorator:
    """Drop the checks in NOT_APPLICABLE from parametrize_with_checks' parameters."""

    def name(param: object) -> str:
        values = getattr(param, "values", param)
        check = values[1]
        return getattr(check, "func", check).__name__

    params = [p for p in mark.args[1] if name(p) not in NOT_APPLICABLE]
    assert len(params) < len(mark.args[1])
    return pytest.mark.parametrize(mark.args[0], params, **mark.kwargs)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:y contains no unlabeled samples")
@_applicable(
    parametrize_with_checks(
        ESTIMATORS,
        expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS.get(type(est).__name__, {}),
    )
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_minus_one_class_works_with_another_unlabeled_label():
    """The expected failure above disappears when -1 is not the unlabeled marker."""
    import numpy as np

    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(-2, 0.3, (20, 2)), rng.normal(2, 0.3, (20, 2))]
    y = np.r_[-np.ones(20, dtype=int), np.ones(20, dtype=int)]
    clf = VATClassifier(hidden_layer_sizes=(8,), max_iter=60, learning_rate_init=0.01, unlabeled_label=None)
    clf.set_params(random_state=0, device="cpu")
    with pytest.warns(UserWarning, match="no unlabeled samples"):
        clf.fit(X, y)
    assert clf.classes_.tolist() == [-1, 1]
    assert clf.score(X, y) == 1.0
