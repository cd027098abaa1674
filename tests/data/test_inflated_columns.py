"""``warn_inflated_columns``: standardized near-constant columns are named before VAT trains on them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from torchvat.data import INFLATED_DEVIATION, FeatureScaleWarning, from_arrays, standardize, warn_inflated_columns


def _count(x: np.ndarray, **kwargs) -> tuple[int, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        n = warn_inflated_columns(torch.from_numpy(np.ascontiguousarray(x)), **kwargs)
    return n, [w for w in caught if issubclass(w.category, FeatureScaleWarning)]


def _rare_column(n: int = 500, seed: int = 0) -> np.ndarray:
    """Three Gaussian columns and one that is 0 in every row but two (value 1)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(n, 3)), np.zeros((n, 1))], axis=1)
    x[[3, 7], 3] = 1.0
    return x


def test_a_standardized_near_constant_column_is_named_with_its_rows():
    z = StandardScaler().fit_transform(_rare_column())
    n, caught = _count(z, feature_names=["a", "b", "c", "rare"], where="train.csv")
    assert n == 1 and len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith("train.csv: 1 of the 4 feature columns ('rare') hold values up to 16 times")
    assert "in 2 of 500 rows" in message and "MinMaxScaler" in message


def test_the_same_column_unstandardized_or_scaled_to_a_range_is_not_flagged():
    x = _rare_column()
    assert _count(x) == (0, [])
    assert _count(MinMaxScaler().fit_transform(x)) == (0, [])


def test_the_threshold_is_inflated_deviation_times_the_typical_scale():
    # a rare value k standard deviations out: flagged from INFLATED_DEVIATION on, not below it
    rng = np.random.default_rng(1)
    base = rng.normal(size=(4000, 3))
    base = (base - base.mean(0)) / base.std(0)
    for k, flagged in ((INFLATED_DEVIATION * 0.8, 0), (INFLATED_DEVIATION * 1.5, 1)):
        x = base.copy()
        x[0, 1] = k
        assert _count(x)[0] == flagged, k


@pytest.mark.parametrize(
    ("loader", "scaler", "expected"),
    [
        (load_digits, StandardScaler, 9),  # pixels that are almost always 0
        (load_digits, None, 0),
        (load_digits, MinMaxScaler, 0),
        (load_breast_cancer, StandardScaler, 0),  # heavy tails, but no value 15 deviations out
        (load_breast_cancer, None, 0),  # columns in other units: not rare values
        (load_wine, None, 0),
    ],
)
def test_bundled_sets(loader, scaler, expected):
    x, _ = loader(return_X_y=True)
    if scaler is not None:
        x = scaler().fit_transform(x)
    assert _count(x)[0] == expected


def test_non_finite_entries_and_degenerate_shapes_are_skipped():
    z = StandardScaler().fit_transform(_rare_column())
    z[10, 0] = np.nan
    z[11, 1] = np.inf
    assert _count(z)[0] == 1
    assert _count(np.zeros((5, 3)))[0] == 0  # nothing varies
    assert _count(z[:, :1])[0] == 0  # one column
    assert _count(z[:1])[0] == 0  # one row
    assert warn_inflated_columns(torch.zeros(4, 1, 8, 8)) == 0  # images are not checked


def test_from_arrays_warns_with_the_column_names():
    import pandas as pd

    z = StandardScaler().fit_transform(_rare_column())
    frame = pd.DataFrame(z, columns=["a", "b", "c", "rare"])
    y = np.full(len(z), -1)
    y[:20] = np.arange(20) % 2
    with pytest.warns(FeatureScaleWarning, match=r"\('rare'\) hold values up to"):
        from_arrays(frame, y)


def test_standardize_names_the_columns_it_inflated():
    x = _rare_column()
    y = np.full(len(x), -1)
    y[:20] = np.arange(20) % 2
    data = from_arrays(x, y, name="rare")  # raw: nothing to say
    with pytest.warns(FeatureScaleWarning, match=r"^rare after standardize\(\): 1 of the 4 feature columns"):
        standardize(data)
