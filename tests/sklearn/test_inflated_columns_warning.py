"""VATClassifier names standardized near-constant columns before VAT trains on them (FeatureScaleWarning)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from torchvat.data import FeatureScaleWarning
from torchvat.sklearn import VATClassifier


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    y_semi = np.full_like(y, -1)
    y_semi[:100] = y[:100]
    return x, y_semi


def _scale_warnings(model, x, y) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y)
    return [str(w.message) for w in caught if issubclass(w.category, FeatureScaleWarning)]


def test_vat_after_standard_scaler_on_digits_warns(digits):
    messages = _scale_warnings(make_pipeline(StandardScaler(), VATClassifier(max_iter=1, random_state=0)), *digits)
    assert len(messages) == 1
    assert messages[0].startswith("X: 9 of the 64 feature columns (X[:, ")
    assert "scale them to a range (MinMaxScaler) or drop them" in messages[0]


def test_no_warning_for_minmax_scaled_digits_nor_for_supervised_training(digits):
    assert _scale_warnings(make_pipeline(MinMaxScaler(), VATClassifier(max_iter=1, random_state=0)), *digits) == []
    supervised = VATClassifier(max_iter=1, random_state=0, method="supervised")
    assert _scale_warnings(make_pipeline(StandardScaler(), supervised), *digits) == []


def test_the_warning_comes_once_per_cold_fit_not_per_partial_fit(digits):
    x, y = digits
    z = StandardScaler().fit_transform(x)
    clf = VATClassifier(random_state=0)
    first = _scale_warnings_partial(clf, z, y)
    again = _scale_warnings_partial(clf, z, y)
    assert (len(first), len(again)) == (1, 0)


def _scale_warnings_partial(clf, x, y) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.partial_fit(x[:400], y[:400], classes=np.arange(10))
    return [str(w.message) for w in caught if issubclass(w.category, FeatureScaleWarning)]
