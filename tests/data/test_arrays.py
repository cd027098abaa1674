import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from torchvat.data import encode_labels, from_arrays


@pytest.fixture
def X():
    return np.random.default_rng(0).normal(size=(8, 3))


Y = [0, 1, -1, -1, 2, -1, 1, 0]


def test_basic_split(X):
    data = from_arrays(X, Y, unlabeled_includes_labeled=False)
    assert data.n_labeled == 5 and data.n_unlabeled == 3 and data.n_classes == 3
    assert data.x_labeled.dtype == torch.float32 and data.y_labeled.dtype == torch.int64
    assert data.y_labeled.tolist() == [0, 1, 2, 1, 0]
    assert torch.allclose(data.x_unlabeled, torch.tensor(X[[2, 3, 5]], dtype=torch.float32))


def test_unlabeled_includes_labeled_by_default(X):
    data = from_arrays(X, Y)
    assert data.unlabeled_includes_labeled
    assert torch.allclose(data.x_unlabeled, torch.tensor(X, dtype=torch.float32))


def test_tensor_and_test_set(X):
    data = from_arrays(torch.tensor(X), torch.tensor(Y), X_test=X[:2], y_test=[1, 2], n_classes=4)
    assert data.n_classes == 4 and data.y_test.tolist() == [1, 2]


def test_string_labels_with_every_unlabeled_marker(X):
    y = ["cat", "dog", None, "", "bird", "-1", np.nan, "cat"]
    data = from_arrays(X, y, X_test=X[:2], y_test=["dog", "bird"])
    assert data.classes == ["bird", "cat", "dog"]
    assert data.y_labeled.tolist() == [1, 2, 0, 1]
    assert data.y_test.tolist() == [2, 0]


def test_dataframe_and_series_with_nan_labels(X):
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    y = pd.Series([0, 1, np.nan, np.nan, 2, -1, 1, 0])
    data = from_arrays(df, y, unlabeled_includes_labeled=False)
    assert (data.n_labeled, data.n_unlabeled) == (5, 3)
    labels = pd.Series(["x", "y", None, None, "y", None, "x", "x"])
    data = from_arrays(df, labels)
    assert data.classes == ["x", "y"] and data.y_labeled.tolist() == [0, 1, 1, 0, 0]


def test_nullable_integer_series(X):
    y = pd.Series([0, 1, None, None, 2, -1, 1, 0], dtype="Int64")
    data = from_arrays(X, y, unlabeled_includes_labeled=False)
    assert data.y_labeled.tolist() == [0, 1, 2, 1, 0] and data.n_unlabeled == 3


def test_explicit_classes_fix_the_mapping(X):
    data = from_arrays(X, ["b", "a", -1, -1, "a", -1, "b", "b"], classes=["b", "a"])
    assert data.y_labeled.tolist() == [0, 1, 1, 0, 0]


def test_val_fraction_holds_out_labeled_rows(X):
    data = from_arrays(X, Y, val_fraction=0.4, seed=0, unlabeled_includes_labeled=False)
    assert data.x_val.shape[0] == 2 and data.n_labeled == 3 and data.n_unlabeled == 3
    again = from_arrays(X, Y, val_fraction=0.4, seed=0)
    assert torch.equal(again.x_val, data.x_val)
    # Validation rows are not training data, not even unlabeled.
    assert again.n_unlabeled == 6


def test_labels_out_of_range_are_named(X):
    with pytest.raises(ValueError, match=r"invalid labels \[-2, 5\]"):
        from_arrays(X, [0, 1, -2, -1, 5, -1, 1, 0], n_classes=3)


def test_non_integer_labels(X):
    with pytest.raises(ValueError, match=r"non-integers \[0.5\]"):
        from_arrays(X, [0, 1, 0.5, -1, 1, -1, 1, 0])


def test_no_labeled_rows(X):
    with pytest.raises(ValueError, match="no labeled rows"):
        from_arrays(X, [-1] * 8)


def test_nonfinite_inputs(X):
    X = X.copy()
    X[3, 1] = np.nan
    X[5, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or Inf in 2 rows \(first: \[3, 5\]\)"):
        from_arrays(X, Y)
    data = from_arrays(X, Y, allow_nonfinite=True)
    assert torch.isnan(data.x_unlabeled).any()


def test_mismatched_lengths(X):
    with pytest.raises(ValueError, match="X and y must have the same number of rows, got 8 and 7"):
        from_arrays(X, Y[:7])
    with pytest.raises(ValueError, match="X_test and y_test must have the same number of rows"):
        from_arrays(X, Y, X_test=X[:3], y_test=[0, 1])
    with pytest.raises(ValueError, match="given together"):
        from_arrays(X, Y, X_test=X[:3])
    with pytest.raises(ValueError, match="feature shape"):
        from_arrays(X, Y, X_test=X[:2, :2], y_test=[0, 1])


def test_unlabeled_test_rows_rejected(X):
    with pytest.raises(ValueError, match="y_test must be fully labeled"):
        from_arrays(X, Y, X_test=X[:2], y_test=[0, -1])


def test_no_unlabeled_rows_warns(X):
    with pytest.warns(UserWarning, match="no unlabeled"):
        data = from_arrays(X, [0, 1, 2, 0, 1, 2, 0, 1])
    assert data.n_labeled == 8


def test_unlabeled_rows_do_not_warn(X):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_arrays(X, Y)


def test_one_dimensional_inputs_rejected():
    with pytest.raises(ValueError, match=r"reshape\(-1, 1\)"):
        from_arrays(np.zeros(4), [0, 1, -1, -1])


def test_mixed_label_types_rejected(X):
    with pytest.raises(TypeError, match="mixes class names"):
        from_arrays(X, ["a", 1, -1, -1, "b", -1, "a", 1.5])


def test_unknown_class_name(X):
    with pytest.raises(ValueError, match=r"labels \['c'\] that are not in classes"):
        from_arrays(X, ["a", "c", -1, -1, "a", -1, "a", "a"], classes=["a", "b"])


def test_n_classes_disagrees_with_names(X):
    with pytest.raises(ValueError, match="n_classes=5 does not match the 2 class names"):
        from_arrays(X, ["a", "b", -1, -1, "a", -1, "a", "a"], n_classes=5)


def test_encode_labels_object_integers():
    codes, names = encode_labels(np.array([3, None, "-1", 0], dtype=object))
    assert codes.tolist() == [3, -1, -1, 0] and names is None


def test_empty_arrays_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match=r"X must have at least one row, got an empty array of shape \(0, 3\)"):
        from_arrays(np.zeros((0, 3)), np.zeros(0))


def test_validation_split_is_stratified_and_keeps_a_training_row_per_class():
    # a plain random split of these 4 labeled rows held out both rows of one class for some seeds
    X = np.arange(20, dtype=np.float32).reshape(20, 1)
    y = np.array([0, 0, 1, 1] + [-1] * 16)
    for seed in range(20):
        data = from_arrays(X, y, val_fraction=0.5, seed=seed)
        assert sorted(data.y_labeled.tolist()) == [0, 1] and sorted(data.y_val.tolist()) == [0, 1]
    y = np.array([0] * 30 + [1] * 10 + [2] * 2 + [-1] * 8)
    X = np.arange(50, dtype=np.float32).reshape(50, 1)
    data = from_arrays(X, y, val_fraction=0.2, seed=3)
    assert torch.bincount(data.y_val, minlength=3).tolist() == [6, 2, 0]
    assert torch.bincount(data.y_labeled, minlength=3).tolist() == [24, 8, 2]
    again = from_arrays(X, y, val_fraction=0.2, seed=3)
    assert torch.equal(again.x_val, data.x_val)
    assert not torch.equal(from_arrays(X, y, val_fraction=0.2, seed=4).x_val, data.x_val)


def test_validation_split_refuses_when_every_class_has_one_labeled_row():
    X = np.zeros((6, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"val_fraction=0\.5 cannot hold out any labeled row: each of the 2 classes"):
        from_arrays(X, np.array([0, 1, -1, -1, -1, -1]), val_fraction=0.5)


def test_numeric_test_labels_with_named_training_labels_are_refused():
    X = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(TypeError, match=r"y_test holds numbers but y holds class names \['cat', 'dog'\]"):
        from_arrays(X, ["cat", "dog", -1, -1], X_test=X[:2], y_test=[1, 0])
    data = from_arrays(X, ["cat", "dog", -1, -1], X_test=X[:2], y_test=["dog", "cat"])
    assert data.y_test.tolist() == [1, 0]
    data = from_arrays(X, ["cat", "dog", -1, -1], X_test=X[:2], y_test=[1, 0], classes=["cat", "dog"])
    assert data.y_test.tolist() == [1, 0]  # with classes given, numbers are indices into it


def test_a_class_named_like_a_missing_value_is_kept_when_classes_names_it():
    X = np.zeros((6, 2), dtype=np.float32)
    y = ["cat", "NA", "dog", "NA", -1, -1]
    with pytest.warns(UserWarning, match=r"the labels \['NA'\] were read as unlabeled rows"):
        assert from_arrays(X, y, unlabeled_includes_labeled=False).classes == ["cat", "dog"]
    data = from_arrays(X, y, classes=["NA", "cat", "dog"], unlabeled_includes_labeled=False)  # North America
    assert data.classes == ["NA", "cat", "dog"] and sorted(data.y_labeled.tolist()) == [0, 0, 1, 2]


_OUTSIDE = r"values outside the int64 range \[-9223372036854775808, 9223372036854775807\]: "


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (np.array([0.0, 1.0, np.inf, -1.0]), r"non-integers \[inf\]"),
        (np.array([0.0, 1.0, -np.inf, -1.0]), r"non-integers \[-inf\]"),
        ([0, 1, float("inf"), -1], r"non-integers \[inf\]"),
        (np.array([0.0, 1.0, 1e30, -1.0]), _OUTSIDE + r"\[1000000000000000019884624838656\]"),
        (np.array([0.0, 1.0, 2.0**63, -1.0]), _OUTSIDE + r"\[9223372036854775808\]"),
        ([0, 1, 1e30, -1], _OUTSIDE + r"\[1000000000000000019884624838656\]"),
        ([0, 1, 2**70, -1], _OUTSIDE + r"\[1180591620717411303424\]"),
        (np.array([0, 1, 2**64 - 1, 0], dtype=np.uint64), _OUTSIDE + r"\[18446744073709551615\]"),
    ],
)
def test_infinite_and_huge_labels_are_named_not_wrapped(y, match):
    with pytest.raises(ValueError, match=r"y must hold integer class indices, got " + match):
        from_arrays(np.zeros((4, 2)), y)


def test_numeric_class_names_of_equal_value_sort_as_text():
    from torchvat.data.arrays import _name_order

    key = _name_order(["1", "1.0", "2.5"])
    # sorted() is stable: a key of the value alone would keep the set's (hash) order of "1" and "1.0"
    assert sorted(["1.0", "1", "2.5"], key=key) == sorted(["1", "2.5", "1.0"], key=key) == ["1", "1.0", "2.5"]
    codes, names = encode_labels(np.array(["1.0", "10", "1", "2.5", "1"]))
    assert names == ["1", "1.0", "2.5", "10"] and codes.tolist() == [1, 3, 0, 2, 0]
