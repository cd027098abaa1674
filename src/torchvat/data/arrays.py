"""Semi-supervised data from in-memory arrays (scikit-learn convention: ``y == -1``)."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from torchvat.data.container import SemiSupervisedData

__all__ = [
    "DOMINANT_VARIANCE_SHARE",
    "INFLATED_DEVIATION",
    "UNLABELED",
    "FeatureScaleWarning",
    "encode_labels",
    "from_arrays",
    "warn_dominant_column",
    "warn_inflated_columns",
]

UNLABELED = -1
"""Label value that marks an unlabeled row (scikit-learn's convention)."""


def _to_numpy(a: Any) -> np.ndarray:
    """Convert tensors, pandas objects, lists and arrays to a numpy array (no copy if possible)."""
    if isinstance(a, Tensor):
        return a.detach().cpu().numpy()
    if hasattr(a, "to_numpy"):  # pandas DataFrame / Series, without importing pandas
        return a.to_numpy()
    return np.asarray(a)


def _inputs_tensor(x: Any, arg: str, allow_nonfinite: bool) -> Tensor:
    """Convert an input array-like to a float32 tensor with checks."""
    if isinstance(x, Tensor):
        t = x.detach().cpu()
        if not (
            t.is_floating_point()
            or t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)
        ):
            raise TypeError(f"{arg} must hold numbers, got dtype {t.dtype}")
        t = t.to(torch.float32)
    else:
        arr = _to_numpy(x)
        try:
            arr = arr.astype(np.float32, copy=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{arg} must hold numbers only, got dtype {arr.dtype}: {err}") from err
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.ndim < 2:
        raise ValueError(
            f"{arg} must have shape [n_samples, n_features, ...], got shape {tuple(t.shape)}; "
            "use X.reshape(-1, 1) for a single feature"
        )
    if t.shape[0] == 0:
        raise ValueError(f"{arg} must have at least one row, got an empty array of shape {tuple(t.shape)}")
    if not allow_nonfinite:
        bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1)
        if bool(bad.any()):
            rows = bad.nonzero().squeeze(1)[:5].tolist()
            raise ValueError(
                f"{arg} contains NaN or Inf in {int(bad.sum())} rows (first: {rows}); "
                "clean them or pass allow_nonfinite=True"
            )
    return t


class FeatureScaleWarning(UserWarning):
    """The feature columns' scales mislead VAT's L2 perturbations and derived eps.

    One raw column holds most of the variance (:func:`warn_dominant_column`), or columns hold rare
    values far out on the other columns' scale (:func:`warn_inflated_columns`).
    """


DOMINANT_VARIANCE_SHARE = 0.9
"""Share of the summed column variances above which :func:`warn_dominant_column` warns."""

INFLATED_DEVIATION = 15.0
"""How many typical column standard deviations from its column's mean make a value "inflated"
(:func:`warn_inflated_columns`), and as many of its own column's. Standardized, scikit-learn's digits
reach 42 (pixels that are almost always 0); no column of breast cancer (10.4), Fashion-MNIST's 50
principal components (7.8), wine (3.7) or Gaussian data goes past 11 (BENCHMARKS.md section 6)."""


def _column_deviations(x: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``|x - column mean|`` of 2-D ``x`` on the CPU in ``dtype``, and each column's count of finite entries.

    NaN and Inf entries are left out of the means and counts, and their deviations are 0.
    """
    xd = x.detach().to("cpu", dtype)
    finite = torch.isfinite(xd)
    count = finite.sum(0).clamp_min(1)
    mean = torch.where(finite, xd, 0.0).sum(0) / count
    return torch.where(finite, (xd - mean).abs(), 0.0), count


def warn_dominant_column(x: Tensor, *, feature_names: Sequence[str] | None = None, where: str = "X") -> float:
    """Warn when one column of 2-D inputs holds most of their variance (raw features of very different scales).

    The L2 perturbations of VAT and AT, and an eps derived from the data (:func:`torchvat.suggest_eps`, the
    default), see the inputs as one vector: when one column's variance dwarfs the others' (wine's
    ``proline``, in the hundreds, beside columns below 10), eps is set by that column alone and the others
    are barely perturbed. Standardizing the columns gives each the same weight. NaN and Inf entries are
    left out of the variances.

    Args:
        x: Inputs ``[N, D]``; other shapes (images) are not checked.
        feature_names: Names of the ``D`` columns, for the message (``X[:, j]`` when ``None``).
        where: What holds ``x`` (a file, a dataset name), for the message.

    Returns:
        The largest column's share of the summed variances (0.0 when not checked).

    Warns:
        FeatureScaleWarning: If that share is at least :data:`DOMINANT_VARIANCE_SHARE`.

    Example:
        >>> import torch, warnings
        >>> x = torch.stack([torch.linspace(0, 1, 50), torch.linspace(300, 1600, 50)], dim=1)
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     share = warn_dominant_column(x, feature_names=["hue", "proline"], where="wine.csv")
        >>> round(share, 6), "'proline' holds 100.0% of the variance" in str(caught[0].message)
        (0.999999, True)
    """
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        return 0.0
    deviation, count = _column_deviations(x, torch.float64)
    var = (deviation**2).sum(0) / count
    total = float(var.sum())
    if not math.isfinite(total) or total <= 0.0:
        return 0.0
    top = var.topk(2).values.tolist()
    j = int(var.argmax())
    share = top[0] / total
    if share >= DOMINANT_VARIANCE_SHARE:
        column = repr(str(feature_names[j])) if feature_names is not None else f"X[:, {j}]"
        warnings.warn(
            f"{where}: the column {column} holds {share:.1%} of the variance of the {x.shape[1]} feature columns "
            f"(variance {top[0]:.3g}, the next largest {top[1]:.3g}), so a derived eps (eps=None, the default) "
            "and the L2 perturbations are set by this column alone and barely move the others; standardize "
            "the columns (--preprocess standardize in the CLI, torchvat.data.standardize(data) in Python) "
            "unless their scales are meaningful",
            FeatureScaleWarning,
            stacklevel=3,
        )
    return share


def warn_inflated_columns(x: Tensor, *, feature_names: Sequence[str] | None = None, where: str = "X") -> int:
    """Warn when columns of 2-D inputs hold rare values far out on the other columns' scale.

    A column that is almost constant (a pixel that is nearly always 0, a rare one-hot category) and
    then standardized has a standard deviation of 1 like the others, and its rare values land tens of
    standard deviations from its mean. With plain BatchNorm and few labels, the rows holding such
    values put VAT below supervised training through the batches they share with the other rows:
    on scikit-learn's digits with 50 labels, VAT gives 73% accuracy after ``StandardScaler`` (79%
    supervised), 84% with the unlabeled rows beyond 5 standard deviations left out, and 89% after
    ``MinMaxScaler`` (83%); BatchNorm with trimmed statistics
    (:class:`torchvat.models.TrimmedBatchNorm1d`) gives 85.5% after ``StandardScaler``. A value
    counts as inflated when it lies at
    least :data:`INFLATED_DEVIATION` times its column's standard deviation from its column's mean
    (a rare value) and at least as many times the median column standard deviation of the columns
    that vary (large on the data's scale): the same pixels unstandardized are small on the data's
    scale, and raw columns in other units (a dominant column, :func:`warn_dominant_column`) are not
    rare values. NaN and Inf entries are left out.

    Args:
        x: Inputs ``[N, D]``; other shapes (images) are not checked.
        feature_names: Names of the ``D`` columns, for the message (``X[:, j]`` when ``None``).
        where: What holds ``x`` (a file, a dataset name, an argument), for the message.

    Returns:
        The number of columns with inflated values (0 when not checked).

    Warns:
        FeatureScaleWarning: If there is at least one.

    Example:
        >>> import torch, warnings
        >>> x = torch.randn(400, 3, generator=torch.Generator().manual_seed(0))
        >>> x[:, 2] = 0.0
        >>> x[0, 2] = 1.0  # a column that is 0 in every row but one ...
        >>> z = (x - x.mean(0)) / x.std(0)  # ... then standardized: that row is 20 deviations out
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     n = warn_inflated_columns(z, feature_names=["a", "b", "rare"])
        >>> n, "'rare'" in str(caught[0].message)
        (1, True)
        >>> warn_inflated_columns(x)  # unstandardized, the rare value is small on the data's scale
        0
    """
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        return 0
    deviation, count = _column_deviations(x, torch.float64 if x.dtype == torch.float64 else torch.float32)
    std = ((deviation**2).sum(0) / count).sqrt()
    varying = std[std > 0]
    if varying.numel() == 0:
        return 0
    scale = float(varying.median())
    if not math.isfinite(scale) or scale <= 0.0:
        return 0
    # far out on its own column's scale (a rare value) and on the data's (not a column in other units)
    inflated = deviation >= INFLATED_DEVIATION * torch.maximum(std, torch.tensor(scale, dtype=std.dtype))
    columns = inflated.any(0).nonzero().squeeze(1).tolist()
    if columns:
        names = [repr(str(feature_names[j])) if feature_names is not None else f"X[:, {j}]" for j in columns]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        largest = float(deviation[:, columns].max()) / scale
        warnings.warn(
            f"{where}: {len(columns)} of the {x.shape[1]} feature columns ({shown}) hold values up to "
            f"{largest:.0f} times the typical column's standard deviation from their mean, in "
            f"{int(inflated.any(1).sum())} of {x.shape[0]} rows: columns that are almost constant (pixels nearly "
            "always 0, rare one-hot categories) look like this after standardization. With plain BatchNorm and "
            "few labels, the rows holding such values can put VAT below supervised training through the batches "
            "they share with the other rows (scikit-learn digits, 50 labels: 73% accuracy standardized, 89% "
            "scaled to [0, 1]; BENCHMARKS.md section 6): scale them to a range (MinMaxScaler) or drop them, "
            "unless their spread is meaningful",
            FeatureScaleWarning,
            stacklevel=3,
        )
    return len(columns)


MISSING_LABEL_TEXTS = frozenset({"", "-1", "nan", "na", "n/a", "<na>", "null", "none"})
"""Label texts (compared stripped and lower-cased) that mark an unlabeled row, besides numbers equal to -1:
the empty cell, ``-1``, and the missing-value spellings of pandas, R and Python (``NaN``, ``NA``,
``N/A``, ``<NA>``, ``null``, ``None``)."""


def is_missing_label_text(s: str) -> bool:
    """Whether label text ``s`` marks an unlabeled row (see :data:`MISSING_LABEL_TEXTS`; ``"-1.0"`` too)."""
    t = s.strip().lower()
    if t in MISSING_LABEL_TEXTS:
        return True
    try:
        return float(t) == UNLABELED
    except ValueError:
        return False


def warn_missing_spellings(texts: Sequence[str], arg: str) -> None:
    """Warn when label texts other than ``""`` and ``-1`` were read as unlabeled (``"NA"``, ``"None"``, ...).

    A class really named so would otherwise vanish into the unlabeled rows without a word.
    """
    spelled = sorted({t.strip() for t in texts if t.strip() and not _is_number(t.strip())})
    if spelled:
        warnings.warn(
            f"{arg}: the labels {spelled[:10]} were read as unlabeled rows (missing-value spellings); "
            "if they are class names, pass classes= with them",
            UserWarning,
            stacklevel=3,
        )


def _is_number(text: str) -> bool:
    try:
        return not math.isnan(float(text))
    except ValueError:
        return False


def _is_missing(v: Any) -> bool:
    """Whether a single label value marks an unlabeled row."""
    if v is None or type(v).__name__ == "NAType":  # pandas.NA, without importing pandas
        return True
    if isinstance(v, str):
        return is_missing_label_text(v)
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return math.isnan(float(v)) or float(v) == UNLABELED
    return False


def _plain(v: Any) -> Any:
    """A numpy scalar as the Python number it holds (``7.5``, not ``np.float64(7.5)``), for messages."""
    return v.item() if isinstance(v, np.generic) else v


def _as_int(v: Any) -> int | None:
    """Return ``v`` as an int when it is an integral number, else ``None``."""
    if isinstance(v, bool | np.bool_):
        return None
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real) and float(v).is_integer():
        return int(float(v))
    return None


def _name_order(names: Sequence[str]) -> Callable[[str], Any]:
    """Sort key of class names: by value when every name is a number (``"2" < "10"``), else as text.

    Names of equal value (``"1"`` and ``"1.0"``) are ordered as text, so the order never depends on
    the iteration order of a set.
    """
    try:
        for n in set(names):
            float(n)
    except ValueError:
        return str
    return lambda s: (float(s), s)


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _check_int64_range(values: Sequence[int], arg: str) -> None:
    """Raise if an integral class index does not fit into ``int64`` (it would wrap when cast)."""
    big = sorted({v for v in values if not _INT64_MIN <= v <= _INT64_MAX})
    if big:
        raise ValueError(
            f"{arg} must hold integer class indices, got values outside the int64 range "
            f"[{_INT64_MIN}, {_INT64_MAX}]: {big[:10]}"
        )


def encode_labels(
    y: Any,
    *,
    classes: Sequence[str] | None = None,
    arg: str = "y",
) -> tuple[np.ndarray, list[str] | None]:
    """Map raw labels to class indices, with ``-1`` for unlabeled rows.

    Integer labels (also integral floats, e.g. a pandas column with missing values) are
    kept as indices. Any other labels are class names: they are mapped to their position
    in ``classes``, or in the sorted unique names when ``classes`` is ``None``. Unlabeled
    rows are marked by ``-1``, ``"-1"``, ``None``, NaN or the empty string.

    Args:
        y: 1-D labels: numpy array, tensor, pandas Series or list.
        classes: Known class names in index order (for string labels).
        arg: Argument name used in error messages.

    Returns:
        ``(codes, classes)``: ``int64`` codes with ``-1`` for unlabeled rows, and the class
        names (``None`` for integer labels unless ``classes`` was given).

    Raises:
        ValueError: If ``y`` is not 1-D, holds non-integral numbers, or names a class
            missing from ``classes``.
        TypeError: If ``y`` mixes numbers and strings.

    Example:
        >>> codes, names = encode_labels(["cat", None, "dog", "", "cat"])
        >>> codes.tolist(), names
        ([0, -1, 1, -1, 0], ['cat', 'dog'])
    """
    # Lists keep their element types (numpy would turn ["a", 1] into strings).
    arr = np.array(y, dtype=object) if isinstance(y, list | tuple) else _to_numpy(y)
    if arr.ndim != 1:
        raise ValueError(f"{arg} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        if arr.dtype == np.uint64 and arr.size:
            _check_int64_range([int(arr.max())], arg)
        return arr.astype(np.int64), None if classes is None else list(classes)
    if arr.dtype.kind == "b":
        raise TypeError(f"{arg} must hold class indices or class names, got dtype bool")
    if arr.dtype.kind == "f":
        missing = np.isnan(arr) | (arr == UNLABELED)
        vals = arr[~missing]
        frac = ~np.isfinite(vals) | (vals != np.round(vals))
        if frac.any():
            bad = np.unique(vals[frac])[:10].tolist()
            first = int(np.flatnonzero(~missing)[np.argmax(frac)])
            raise ValueError(
                f"{arg} must hold integer class indices, got non-integers {bad} "
                f"(the first, {_plain(arr[first])!r}, at index {first})"
            )
        if vals.size:
            _check_int64_range([int(vals.min()), int(vals.max())], arg)
        codes = np.where(missing, UNLABELED, arr).astype(np.int64)
        return codes, None if classes is None else list(classes)
    # Object or string arrays: per-element inspection.
    values = arr.tolist()
    named = set() if classes is None else {str(c) for c in classes}
    missing = np.array([_is_missing(v) and not (isinstance(v, str) and v.strip() in named) for v in values], dtype=bool)
    warn_missing_spellings([v for v, m in zip(values, missing, strict=True) if m and isinstance(v, str)], arg)
    present = [v for v, m in zip(values, missing, strict=True) if not m]
    maybe_ints = [_as_int(v) for v in present]
    ints = [i for i in maybe_ints if i is not None]
    if present and len(ints) == len(maybe_ints):
        _check_int64_range(ints, arg)
        codes = np.full(len(values), UNLABELED, dtype=np.int64)
        codes[~missing] = np.asarray(ints, dtype=np.int64)
        return codes, None if classes is None else list(classes)
    if present and all(isinstance(v, numbers.Real) and not isinstance(v, str) for v in present):
        bad = sorted({float(v) for v, i in zip(present, maybe_ints, strict=True) if i is None})
        first = next(k for k, v in enumerate(values) if not missing[k] and _as_int(v) is None)
        raise ValueError(
            f"{arg} must hold integer class indices, got non-integers {bad[:10]} "
            f"(the first, {_plain(values[first])!r}, at index {first})"
        )
    non_str = sorted({type(v).__name__ for v in present if not isinstance(v, str | np.str_)})
    if non_str:
        raise TypeError(
            f"{arg} mixes class names (strings) with values of type {non_str}; "
            "use either integer class indices or string class names"
        )
    names = [str(v).strip() for v in present]
    if classes is None:
        classes = sorted(set(names), key=_name_order(names))
    lookup = {str(c): i for i, c in enumerate(classes)}
    unknown = sorted(set(names) - lookup.keys())
    if unknown:
        raise ValueError(f"{arg} holds labels {unknown[:10]} that are not in classes={classes}")
    codes = np.full(len(values), UNLABELED, dtype=np.int64)
    codes[~missing] = np.asarray([lookup[s] for s in names], dtype=np.int64)
    return codes, [str(c) for c in classes]


def stratified_holdout(y: Tensor, fraction: float, seed: int) -> Tensor:
    """A boolean mask over labeled rows ``y`` holding out ``fraction`` of them, class by class.

    ``max(1, round(fraction * len(y)))`` rows are held out, shared among the classes in proportion to
    their counts (largest remainders first), and every class keeps at least one training row: a plain
    random split can hold out every labeled row of a rare class. The rows of each class are drawn at
    random with ``seed``.

    Raises:
        ValueError: If no row can be held out because every class has a single labeled row.
    """
    counts = torch.bincount(y).tolist()
    present = [c for c, n in enumerate(counts) if n > 0]
    cap = {c: counts[c] - 1 for c in present}
    if sum(cap.values()) == 0:
        raise ValueError(
            f"val_fraction={fraction} cannot hold out any labeled row: each of the {len(present)} "
            "classes has a single labeled row, which training needs"
        )
    n_val = min(max(1, round(fraction * y.shape[0])), sum(cap.values()))
    quota = {c: fraction * counts[c] for c in present}
    take = {c: min(math.floor(quota[c]), cap[c]) for c in present}
    by_remainder = sorted(present, key=lambda c: (-(quota[c] - math.floor(quota[c])), c))
    while sum(take.values()) < n_val:
        for c in by_remainder:
            if take[c] < cap[c] and sum(take.values()) < n_val:
                take[c] += 1
    gen = torch.Generator().manual_seed(int(seed))
    held = torch.zeros(y.shape[0], dtype=torch.bool)
    for c in present:
        rows = torch.nonzero(y == c).flatten()
        held[rows[torch.randperm(rows.shape[0], generator=gen)[: take[c]]]] = True
    return held


def from_arrays(
    X: Any,
    y: Any,
    *,
    X_test: Any = None,
    y_test: Any = None,
    n_classes: int | None = None,
    classes: Sequence[str] | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    unlabeled_includes_labeled: bool = True,
    allow_nonfinite: bool = False,
    name: str = "arrays",
    feature_names: Sequence[str] | None = None,
) -> SemiSupervisedData:
    """Build a semi-supervised problem from arrays where ``y == -1`` marks unlabeled rows.

    Accepts numpy arrays, torch tensors, pandas DataFrames/Series and lists. Labels are
    integers or class names (see :func:`encode_labels`). As scikit-learn's ``classes_``, the
    classes are the label values present (in ``y``'s labeled rows and in ``y_test``): integer
    labels ``{0, 2, 5}`` give three classes, indices 0, 1, 2 with the names ``["0", "2", "5"]`` in
    ``classes``, which map predictions back to the values; labels ``0..K-1`` stay as they are
    (``classes`` is ``None``). With ``n_classes`` or ``classes`` given, integer labels are indices.

    Args:
        X: Training inputs, shape ``[N, ...]``.
        y: Training labels, shape ``[N]``; ``-1`` (or ``"-1"``, ``None``, NaN, ``""``)
            marks unlabeled rows.
        X_test: Test inputs, or ``None``.
        y_test: Test labels (all labeled), required when ``X_test`` is given.
        n_classes: Number of classes; integer labels are then indices in ``[0, n_classes)``. When
            ``None``, the classes are the label values present.
        classes: Class names in index order (fixes the mapping of string labels).
        val_fraction: Fraction of the labeled rows held out as a validation set, in
            ``[0, 1)``; held-out rows are not used for training at all. The split is
            stratified: each class gives its share and keeps at least one training row
            (:func:`stratified_holdout`).
        seed: Seed of the validation split.
        unlabeled_includes_labeled: Whether ``x_unlabeled`` also holds the labeled inputs.
        allow_nonfinite: Accept NaN/Inf in the inputs.
        name: Dataset name stored in the result.
        feature_names: Names of the columns of a 2-D ``X``, for messages; a DataFrame's columns when ``None``.

    Returns:
        The semi-supervised problem.

    Raises:
        ValueError: On mismatched lengths or shapes, labels outside ``[0, n_classes)``,
            no labeled rows, non-finite inputs, or a bad ``val_fraction``.
        TypeError: On non-numeric inputs or mixed label types.

    Warns:
        UserWarning: If ``y`` contains no unlabeled rows, or a label value occurs in ``y_test`` only.
        FeatureScaleWarning: If one column of a 2-D ``X`` holds most of the variance
            (:func:`warn_dominant_column`): standardize the columns.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(6, 2))
        >>> data = from_arrays(X, [0, 1, -1, -1, -1, -1], unlabeled_includes_labeled=False)
        >>> data.n_labeled, data.n_unlabeled, data.n_classes
        (2, 4, 2)
    """
    x = _inputs_tensor(X, "X", allow_nonfinite)
    codes, names = encode_labels(y, classes=classes, arg="y")
    if codes.shape[0] != x.shape[0]:
        raise ValueError(f"X and y must have the same number of rows, got {x.shape[0]} and {codes.shape[0]}")
    labeled = codes != UNLABELED
    if not labeled.any():
        raise ValueError(f"y has no labeled rows: all {codes.shape[0]} rows are -1 (unlabeled)")
    if (X_test is None) != (y_test is None):
        raise ValueError("X_test and y_test must be given together, got only one of them")
    x_test = t_test = None
    if X_test is not None:
        x_test = _inputs_tensor(X_test, "X_test", allow_nonfinite)
        if classes is None and names is not None and np.asarray(y_test).dtype.kind in "iuf":
            raise TypeError(
                f"y_test holds numbers but y holds class names {names[:10]}; give y_test as names too "
                "(or pass classes= to read numbers as indices into it)"
            )
        t_codes, names_t = encode_labels(y_test, classes=names, arg="y_test")
        if names is None and names_t is not None:
            raise TypeError("y_test holds class names but y holds class indices")
        if t_codes.shape[0] != x_test.shape[0]:
            raise ValueError(
                f"X_test and y_test must have the same number of rows, got {x_test.shape[0]} and {t_codes.shape[0]}"
            )
        if tuple(x_test.shape[1:]) != tuple(x.shape[1:]):
            raise ValueError(
                f"X_test must have the feature shape of X {tuple(x.shape[1:])}, got {tuple(x_test.shape[1:])}"
            )
        if (t_codes == UNLABELED).any():
            raise ValueError(f"y_test must be fully labeled, got {int((t_codes == UNLABELED).sum())} unlabeled rows")
        t_test = torch.from_numpy(t_codes)
    all_codes = codes[labeled] if t_test is None else np.concatenate([codes[labeled], t_codes])
    if n_classes is None and names is None:  # the classes are the label values present, as scikit-learn's classes_
        values = np.unique(all_codes)
        negative = values[values < 0]
        if negative.size:
            raise ValueError(
                "labels must be class values >= 0 or -1 for unlabeled rows, "
                f"got invalid labels {negative[:10].tolist()}"
            )
        n_classes = int(values.size)
        train_values = np.unique(codes[labeled])
        if not np.array_equal(values, np.arange(n_classes)):  # e.g. {0, 2, 5}: indices 0, 1, 2, named "0", "2", "5"
            names = [str(v) for v in values.tolist()]
            codes = np.where(labeled, np.searchsorted(values, codes), UNLABELED).astype(np.int64)
            if t_test is not None:
                t_codes = np.searchsorted(values, t_codes).astype(np.int64)
                t_test = torch.from_numpy(t_codes)
            all_codes = np.searchsorted(values, all_codes)
        test_only = np.setdiff1d(values, train_values)
        if test_only.size:
            warnings.warn(
                f"the label values {test_only[:10].tolist()} occur in y_test only: no labeled training row "
                "has them, so the model cannot learn these classes",
                UserWarning,
                stacklevel=2,
            )
    elif names is not None:
        if n_classes is None:
            n_classes = len(names)
        elif n_classes != len(names):
            raise ValueError(f"n_classes={n_classes} does not match the {len(names)} class names {names}")
    assert n_classes is not None  # set by the label values, the names or the caller (an invariant, not input)
    bad = np.unique(all_codes[(all_codes < 0) | (all_codes >= n_classes)])
    if bad.size:
        raise ValueError(
            f"labels must be in [0, {n_classes}) or -1 for unlabeled rows, got invalid labels {bad[:10].tolist()}"
        )
    if labeled.all():
        warnings.warn(
            "y contains no unlabeled rows (no unlabeled samples, y == -1): semi-supervised methods "
            "regularize the labeled rows only",
            UserWarning,
            stacklevel=2,
        )
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    lab_idx = torch.from_numpy(np.flatnonzero(labeled))
    unl_idx = torch.from_numpy(np.flatnonzero(~labeled))
    y_all = torch.from_numpy(codes)
    x_val = y_val = None
    if val_fraction > 0:
        held = stratified_holdout(y_all[lab_idx], val_fraction, seed)
        val_idx, lab_idx = lab_idx[held], lab_idx[~held]
        x_val, y_val = x[val_idx], y_all[val_idx]
    if unlabeled_includes_labeled:
        x_unlabeled = x[torch.cat([lab_idx, unl_idx]).sort().values]
    else:
        x_unlabeled = x[unl_idx]
    if feature_names is None and hasattr(X, "columns"):  # a pandas DataFrame
        feature_names = [str(c) for c in X.columns]
    if feature_names is not None and x.ndim == 2 and len(feature_names) != x.shape[1]:
        raise ValueError(f"feature_names must name the {x.shape[1]} columns of X, got {len(feature_names)} names")
    warn_dominant_column(x, feature_names=feature_names, where=name)
    warn_inflated_columns(x, feature_names=feature_names, where=name)
    return SemiSupervisedData(
        x_labeled=x[lab_idx],
        y_labeled=y_all[lab_idx],
        x_unlabeled=x_unlabeled,
        n_classes=n_classes,
        name=name,
        x_test=x_test,
        y_test=t_test,
        x_val=x_val,
        y_val=y_val,
        classes=names,
        unlabeled_includes_labeled=unlabeled_includes_labeled,
    )
