"""Users' own data from files: ``.npz`` archives, CSV tables and image folders."""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from torchvat._extras import require
from torchvat.data.arrays import (
    _INT64_MAX,
    _INT64_MIN,
    UNLABELED,
    from_arrays,
    is_missing_label_text,
    warn_missing_spellings,
)
from torchvat.data.container import SemiSupervisedData

__all__ = ["CSV_DELIMITERS", "IMAGE_EXTENSIONS", "load_csv", "load_image_folder", "load_npz"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
"""File name endings :func:`load_image_folder` reads as images."""


def _existing(path: str | os.PathLike[str], arg: str, *, directory: bool = False) -> Path:
    p = Path(path).expanduser()
    ok = p.is_dir() if directory else p.is_file()
    if not ok:
        kind = "directory" if directory else "file"
        raise FileNotFoundError(f"{arg}: {kind} not found: {p}")
    return p


def load_npz(
    path: str | os.PathLike[str],
    *,
    n_classes: int | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    unlabeled_includes_labeled: bool = True,
    allow_nonfinite: bool = False,
    name: str | None = None,
) -> SemiSupervisedData:
    """Load a ``.npz`` archive with keys ``X``, ``y`` and optional ``X_test``, ``y_test``.

    ``y == -1`` marks unlabeled rows; see :func:`~torchvat.data.arrays.from_arrays` for
    the checks. Object arrays (pickles) are refused. The classes are the label values present
    (labels ``{0, 2, 5}`` give three classes named ``"0"``, ``"2"``, ``"5"``), unless ``n_classes``
    is given; a non-integer label is refused with its index.

    Args:
        path: The ``.npz`` file.
        n_classes: Number of classes; inferred when ``None``.
        val_fraction: Fraction of the labeled rows held out for validation.
        seed: Seed of the validation split.
        unlabeled_includes_labeled: Whether the unlabeled set holds the labeled inputs.
        allow_nonfinite: Accept NaN/Inf inputs.
        name: Dataset name; the file's stem when ``None``.

    Returns:
        The semi-supervised problem.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        KeyError: If ``X`` or ``y`` is missing (the message lists the keys present).
        ValueError: If a label is not an integer (the message names it and its index).

    Warns:
        FeatureScaleWarning: If ``X`` is 2-D and one of its columns holds most of the variance
            (:func:`~torchvat.data.arrays.warn_dominant_column`).

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "toy.npz")
        >>> np.savez(path, X=np.zeros((4, 3)), y=np.array([0, 1, -1, -1]))
        >>> load_npz(path).name
        'toy'
    """
    p = _existing(path, "path")
    with np.load(p, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    missing = [k for k in ("X", "y") if k not in arrays]
    if missing:
        raise KeyError(f"{p} lacks the keys {missing}; keys present: {sorted(arrays)}")
    return from_arrays(
        arrays["X"],
        arrays["y"],
        X_test=arrays.get("X_test"),
        y_test=arrays.get("y_test"),
        n_classes=n_classes,
        val_fraction=val_fraction,
        seed=seed,
        unlabeled_includes_labeled=unlabeled_includes_labeled,
        allow_nonfinite=allow_nonfinite,
        name=name or p.stem,
    )


#: the delimiters :func:`load_csv` recognises when ``delimiter=None``, in order of preference
CSV_DELIMITERS = (",", ";", "\t", "|")
#: how a pandas index column is named: ``df.to_csv(path)`` writes no name, a re-read and re-written one ``Unnamed: 0``
_INDEX_COLUMN_NAMES = ("", "Unnamed: 0")


def _detect_delimiter(path: Path, label_column: str) -> str:
    """The field separator of a CSV file, among :data:`CSV_DELIMITERS`.

    The delimiters that split the header into several names, one of them ``label_column``, are the
    candidates (one: taken); among several (or none), :class:`csv.Sniffer` decides on the first 64 KiB,
    and ``","`` is the fallback.
    """
    with open(path, newline="", encoding="utf-8-sig") as f:
        sample = f.read(65536)
    lines = sample.splitlines()
    header = next((line for line in lines if line.strip()), "")
    fits = []
    for d in CSV_DELIMITERS:
        names = [h.strip() for h in next(csv.reader([header], delimiter=d), [])]
        if len(names) > 1 and label_column in names:
            fits.append(d)
    if len(fits) == 1:
        return fits[0]
    if len(sample) == 65536 and "\n" in sample:  # sniff whole lines only
        sample = sample[: sample.rindex("\n")]
    try:
        return csv.Sniffer().sniff(sample, delimiters="".join(fits or CSV_DELIMITERS)).delimiter
    except csv.Error:
        return fits[0] if fits else ","


def _index_column(header: list[str], rows: list[list[str]], label_column: str) -> bool:
    """Whether the first column is a pandas index: no name (or ``Unnamed: 0``) and distinct integers."""
    if len(header) < 2 or header[0] not in _INDEX_COLUMN_NAMES or header[0] == label_column or not rows:
        return False
    seen: set[int] = set()
    for row in rows:
        try:
            value = float(row[0]) if row else math.nan
        except ValueError:
            return False
        if not value.is_integer() or int(value) in seen:
            return False
        seen.add(int(value))
    return True


def _integers(texts: list[str]) -> list[int | None]:
    """Each label text as an integer (``"1"`` and ``"1.0"`` alike), or ``None`` when it is not one."""
    out: list[int | None] = []
    for text in texts:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        out.append(int(value) if value.is_integer() else None)
    return out


def _refuse_stray_labels(
    path: Path, label_column: str, present: list[str], ints: list[int | None], lines: list[int]
) -> None:
    """Refuse a label column of integers with a few other values, or the other way round.

    ``7.5`` among 0/1/2 (or ``3`` among names) would otherwise turn every label into a class name and
    add a class of its own. The values of the smaller kind are named with their lines.
    """
    n_int = sum(i is not None for i in ints)
    if n_int in (0, len(ints)):
        return
    stray_is_int = n_int < len(ints) - n_int
    strays = [(t, line) for t, i, line in zip(present, ints, lines, strict=True) if (i is not None) == stray_is_int]
    shown = ", ".join(f"{t!r} on line {line}" for t, line in strays[:5])
    more = f" and {len(strays) - 5} more" if len(strays) > 5 else ""
    others = len(ints) - len(strays)
    expected, got = ("class names", "the integers ") if stray_is_int else ("integer class labels", "")
    raise ValueError(
        f"{path}, column {label_column!r}: expected {expected}, as on the other {others} labeled lines, "
        f"got {got}{shown}{more}; correct them (or mark the rows unlabeled: an empty label or -1), "
        "or pass classes= to read every label as a class name"
    )


def _read_csv(
    path: Path,
    label_column: str,
    delimiter: str | None,
    allow_nonfinite: bool = False,
    classes: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Parse a CSV file into float features, raw labels (integers or names) and the feature column names.

    With ``allow_nonfinite``, an empty feature cell reads as NaN (a missing value). A label text
    that is one of ``classes`` is a class even when it is spelled like a missing value (``"NA"``).
    Errors name the line of the file where the offending record starts (blank lines and
    line breaks inside quoted fields counted). A byte order mark (Excel's "CSV UTF-8") is dropped.
    ``delimiter=None`` detects the delimiter (:func:`_detect_delimiter`). A first column without a
    name holding distinct integers is the index pandas writes (``df.to_csv(path)``): it is dropped,
    with a warning.
    """
    given = delimiter is not None
    if delimiter is None:
        delimiter = _detect_delimiter(path, label_column)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path} is empty: expected a header row") from None
        rows: list[list[str]] = []
        line_nos: list[int] = []
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            if row and any(c.strip() for c in row):
                rows.append(row)
                line_nos.append(start)
    if label_column not in header:
        hint = ""
        if len(header) == 1:
            how = "given" if given else "detected"
            others = [d for d in CSV_DELIMITERS if d != delimiter and d in header[0]]
            hint = (
                f"; the header was read as one column with the {how} delimiter {delimiter!r}"
                + (f", but it holds {others[0]!r}" if others else "")
                + ": pass the file's delimiter as delimiter= (--data-option delimiter=';' in the CLI)"
            )
        raise ValueError(f"label_column={label_column!r} is not a column of {path}: {header}{hint}")
    li = header.index(label_column)
    skip = {li}
    if _index_column(header, rows, label_column):
        skip.add(0)
        first = [int(float(row[0])) for row in rows]
        numbers = f"0..{len(rows) - 1}" if first == list(range(len(rows))) else f"{len(rows)} distinct integers"
        warnings.warn(
            f"{path}: the first column has no name and holds the row numbers {numbers}: the index pandas "
            "writes with df.to_csv(path); it is dropped, not read as a feature (write the file with "
            "df.to_csv(path, index=False) to leave it out)",
            UserWarning,
            stacklevel=3,
        )
    feature_cols = [i for i in range(len(header)) if i not in skip]
    if not feature_cols:
        raise ValueError(f"{path} has no feature columns besides {label_column!r}")
    features = np.empty((len(rows), len(feature_cols)), dtype=np.float32)
    raw_labels: list[str] = []
    for r, (row, line) in enumerate(zip(rows, line_nos, strict=True)):
        if len(row) != len(header):
            raise ValueError(f"{path}, line {line}: expected {len(header)} fields, got {len(row)}")
        raw_labels.append(row[li].strip())
        for j, c in enumerate(feature_cols):
            try:
                features[r, j] = float("nan") if allow_nonfinite and not row[c].strip() else float(row[c])
            except ValueError:
                unnamed = " (a column without a name: an index pandas wrote?)" if not header[c] else ""
                raise ValueError(
                    f"{path}, line {line}, column {header[c]!r}{unnamed}: expected a number, got {row[c]!r}"
                ) from None
    named = set() if classes is None else {str(c).strip() for c in classes}
    missing = [is_missing_label_text(s) and s not in named for s in raw_labels]
    where = f"{path}, column {label_column!r}"
    warn_missing_spellings([s for s, m in zip(raw_labels, missing, strict=True) if m], where)
    present = [s for s, m in zip(raw_labels, missing, strict=True) if not m]
    present_lines = [line for line, m in zip(line_nos, missing, strict=True) if not m]
    ints = _integers(present)
    if classes is None:  # with classes given, labels are names unless all are integers (indices into classes)
        _refuse_stray_labels(path, label_column, present, ints, present_lines)
    if all(i is not None for i in ints):
        for s, i, line in zip(present, ints, present_lines, strict=True):
            if not _INT64_MIN <= i <= _INT64_MAX:  # type: ignore[operator]
                raise ValueError(
                    f"{path}, line {line}, column {label_column!r}: expected an integer class index "
                    f"in [{_INT64_MIN}, {_INT64_MAX}], got {s!r}"
                )
        it = iter(ints)
        labels = np.array([UNLABELED if m else next(it) for m in missing], dtype=np.int64)
    else:
        labels = np.array([None if m else s for s, m in zip(raw_labels, missing, strict=True)], dtype=object)
    return features, labels, [header[c] for c in feature_cols]


def _align_test_columns(
    x_test: np.ndarray, test_names: list[str], train_names: list[str], test_path: Path, path: Path
) -> np.ndarray:
    """Put the test file's feature columns into the training file's order, matching them by name.

    When either header repeats a feature name (several unnamed columns, say), names cannot align
    the columns: they stay in file order, and the files must have the same number of feature columns.
    """
    if test_names == train_names:
        return x_test
    if len(set(train_names)) < len(train_names) or len(set(test_names)) < len(test_names):
        if len(test_names) != len(train_names):
            raise ValueError(
                f"test_path {test_path} must have the {len(train_names)} feature columns of {path}, "
                f"got {len(test_names)}: {test_names}"
            )
        return x_test
    missing = [n for n in train_names if n not in test_names]
    extra = [n for n in test_names if n not in train_names]
    if missing or extra:
        raise ValueError(
            f"test_path {test_path} must have the feature columns of {path} {train_names}, got {test_names}: "
            f"missing {missing}, extra {extra}"
        )
    return x_test[:, [test_names.index(n) for n in train_names]]


def load_csv(
    path: str | os.PathLike[str],
    *,
    label_column: str = "label",
    test_path: str | os.PathLike[str] | None = None,
    delimiter: str | None = None,
    n_classes: int | None = None,
    classes: Sequence[str] | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    unlabeled_includes_labeled: bool = True,
    allow_nonfinite: bool = False,
    name: str | None = None,
) -> SemiSupervisedData:
    r"""Load a CSV table with a header row, one label column and numeric feature columns.

    An empty label, ``-1`` or a missing-value spelling (``NaN``, ``NA``, ``N/A``, ``<NA>``, ``null``,
    ``None``; any case) marks an unlabeled row, unless ``classes`` names it (``classes=["EU", "NA"]``
    keeps ``NA`` as a class). Labels that are all integers (``1`` or ``1.0``) are
    class indices; otherwise they are class names (sorted into indices unless
    ``classes`` is given); a column of integers with a few other values (``7.5`` among 0/1/2) is
    refused, naming them and their lines. The classes are the label values present, as scikit-learn's
    ``classes_`` (integers ``{0, 2, 5}``: three classes named ``"0"``, ``"2"``, ``"5"``; see
    :func:`~torchvat.data.arrays.from_arrays`). Every other column must be numeric; a first column
    without a name holding distinct integers is the index ``df.to_csv(path)`` writes, and is dropped
    with a warning. The test file's feature columns are matched to the training file's by name, so
    they may come in another order. The delimiter is detected unless given.

    Args:
        path: The training CSV file.
        label_column: Name of the label column.
        test_path: Optional CSV file with the same columns (in any order), fully labeled, as test set.
        delimiter: Field separator; ``None`` detects it among ``,`` ``;`` tab ``|`` (the one that splits
            the header into names including ``label_column``, else :class:`csv.Sniffer`'s guess).
        n_classes: Number of classes; inferred when ``None``.
        classes: Class names in index order (for name labels).
        val_fraction: Fraction of the labeled rows held out for validation.
        seed: Seed of the validation split.
        unlabeled_includes_labeled: Whether the unlabeled set holds the labeled inputs.
        allow_nonfinite: Accept NaN/Inf features; an empty feature cell then reads as NaN.
        name: Dataset name; the file's stem when ``None``.

    Returns:
        The semi-supervised problem.

    Raises:
        FileNotFoundError: If a file does not exist.
        ValueError: If the label column is missing, a feature is not a number, an integer label
            column holds other values, or the test file's feature columns are not those of the training file.

    Warns:
        UserWarning: If a pandas index column is dropped, or label texts read as unlabeled rows
            (``NA``, ``None``, ...).
        FeatureScaleWarning: If one feature column holds most of the variance
            (:func:`~torchvat.data.arrays.warn_dominant_column`).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "toy.csv")
        >>> with open(path, "w") as f:
        ...     _ = f.write("a,b,label\n1,2,cat\n3,4,\n5,6,dog\n")
        >>> data = load_csv(path, unlabeled_includes_labeled=False)
        >>> data.classes, data.n_unlabeled
        (['cat', 'dog'], 1)
    """
    p = _existing(path, "path")
    x, y, names = _read_csv(p, label_column, delimiter, allow_nonfinite, classes)
    x_test: Any = None
    y_test: Any = None
    if test_path is not None:
        test_p = _existing(test_path, "test_path")
        x_test, y_test, test_names = _read_csv(test_p, label_column, delimiter, allow_nonfinite, classes)
        x_test = _align_test_columns(x_test, test_names, names, test_p, p)
        if y.dtype == object and y_test.dtype != object:
            y_test = y_test.astype(str).astype(object)
    return from_arrays(
        x,
        y,
        X_test=x_test,
        y_test=y_test,
        n_classes=n_classes,
        classes=classes,
        val_fraction=val_fraction,
        seed=seed,
        unlabeled_includes_labeled=unlabeled_includes_labeled,
        allow_nonfinite=allow_nonfinite,
        name=name or p.stem,
        feature_names=names,
    )


def _image_files(directory: Path) -> list[Path]:
    return sorted(
        f
        for f in directory.iterdir()
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS
    )


def _class_dirs(directory: Path, exclude: set[str]) -> list[Path]:
    return sorted(d for d in directory.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in exclude)


#: PIL modes of more than 8 bits per pixel, and the value that maps to 1.0
_HIGH_DEPTH_SCALE = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}


def _high_depth_array(img: Any, f: Path, size: tuple[int, int] | None, mode: str) -> np.ndarray:
    """A 16-bit, 32-bit integer or float image as float32 in [0, 1] (``[H, W]``, or ``[H, W, 3]`` for RGB).

    PIL's ``convert("L")`` clips such images to 0..255 instead of rescaling them, so they are scaled
    here: 16-bit and integer images by 65535, float images taken as they are (they must hold [0, 1]).
    """
    Image = require("PIL.Image", extra="cli", feature="reading image folders")

    if mode not in ("L", "RGB"):
        raise ValueError(f"mode={mode!r} cannot hold {f} (PIL mode {img.mode!r}, more than 8 bits): use 'L' or 'RGB'")
    arr = np.asarray(img, dtype=np.float32)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    top = _HIGH_DEPTH_SCALE[img.mode]
    if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= top):
        kind = "a floating-point" if img.mode == "F" else "an integer"
        raise ValueError(
            f"{f} is {kind} image (PIL mode {img.mode!r}) with values in [{lo}, {hi}]: expected [0, {top:g}]"
        )
    arr = arr / np.float32(top)
    if size is not None and arr.shape != size:
        arr = np.asarray(Image.fromarray(arr, mode="F").resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return np.repeat(arr[..., None], 3, axis=2) if mode == "RGB" else arr


def _read_images(files: list[Path], size: tuple[int, int] | None, mode: str) -> np.ndarray:
    """Read images as float32 ``[N, C, H, W]`` in [0, 1], resized to ``size`` (height, width).

    8-bit images are converted to ``mode`` and divided by 255; 16-bit, 32-bit integer and float
    grayscale images keep their depth (see :func:`_high_depth_array`).
    """
    Image = require("PIL.Image", extra="cli", feature="reading image folders")

    out = []
    first: tuple[int, int] | None = None
    for f in files:
        with Image.open(f) as img:
            if img.mode in _HIGH_DEPTH_SCALE:
                arr = _high_depth_array(img, f, size, mode)
            else:
                img = img.convert(mode)
                if size is not None and img.size != (size[1], size[0]):
                    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.float32) / np.float32(255.0)
        if first is None:
            first = arr.shape[:2]
        elif arr.shape[:2] != first:
            raise ValueError(
                f"images differ in size: {files[0]} is {first} but {f} is {arr.shape[:2]} "
                "(height, width); pass size= to resize them"
            )
        out.append(arr[None, ...] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return np.stack(out) if out else np.empty((0, 0, 0, 0), dtype=np.float32)


def _detect_mode(files: list[Path]) -> str:
    Image = require("PIL.Image", extra="cli", feature="reading image folders")

    for f in files:
        with Image.open(f) as img:
            if img.mode not in ("L", "1", *_HIGH_DEPTH_SCALE):
                return "RGB"
    return "L"


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    unlabeled_dir: str | None = "unlabeled",
    test_dir: str | os.PathLike[str] | None = None,
    size: int | tuple[int, int] | None = None,
    mode: str | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    unlabeled_includes_labeled: bool = True,
    name: str | None = None,
) -> SemiSupervisedData:
    """Load images from class sub-folders plus an optional folder of unlabeled images.

    ``root/<class name>/*.png`` are labeled images (classes sorted by folder name) and
    ``root/<unlabeled_dir>/*`` unlabeled ones. ``test_dir`` (absolute, or relative to
    ``root``; a test folder inside ``root`` is not a class) has class sub-folders named like the
    training ones. Images are read with PIL, converted to ``mode`` and scaled to ``[0, 1]``:
    inputs are ``[C, H, W]``. 8-bit images are divided by 255; 16-bit and 32-bit integer
    grayscale images (microscopy, medical scans) by 65535, and float images (PIL mode ``"F"``)
    must already hold values in ``[0, 1]``.

    Args:
        root: Directory with the class sub-folders.
        unlabeled_dir: Name of the sub-folder of unlabeled images (skipped when missing),
            or ``None`` for none.
        test_dir: Directory of the test images, or ``None``.
        size: Resize every image to ``(height, width)`` (an int for squares); when
            ``None`` all images, test images included, must have the same size.
        mode: PIL mode (``"L"`` or ``"RGB"``); ``None`` picks ``"L"`` when all training
            images are grayscale, else ``"RGB"``.
        val_fraction: Fraction of the labeled images held out for validation.
        seed: Seed of the validation split.
        unlabeled_includes_labeled: Whether the unlabeled set holds the labeled inputs.
        name: Dataset name; the folder's name when ``None``.

    Returns:
        The semi-supervised problem, with the folder names as classes.

    Raises:
        FileNotFoundError: If ``root`` or ``test_dir`` does not exist.
        ValueError: If there are no class folders, a class folder has no images, ``test_dir``
            holds no images in class sub-folders, the test set names unknown classes, image sizes
            differ without ``size``, or a 16-bit/float image holds values outside its range.
    """
    root_p = _existing(root, "root", directory=True)
    exclude = {unlabeled_dir} if unlabeled_dir else set()
    test_p: Path | None = None
    if test_dir is not None:
        test_p = Path(test_dir).expanduser()
        test_p = _existing(test_p if test_p.is_absolute() else root_p / test_p, "test_dir", directory=True)
        if test_p.resolve().parent == root_p.resolve():  # a test folder inside root is not a class
            exclude.add(test_p.name)
    class_dirs = _class_dirs(root_p, exclude)
    if not class_dirs:
        raise ValueError(f"root {root_p} has no class sub-folders")
    classes = [d.name for d in class_dirs]
    files: list[Path] = []
    labels: list[int] = []
    for c, d in enumerate(class_dirs):
        found = _image_files(d)
        if not found:
            raise ValueError(
                f"class folder {d} has no images (expected files ending in {', '.join(IMAGE_EXTENSIONS)}); "
                "remove it or add its images"
            )
        files += found
        labels += [c] * len(found)
    unl_path = root_p / unlabeled_dir if unlabeled_dir else None
    unl_files = _image_files(unl_path) if unl_path is not None and unl_path.is_dir() else []
    test_files: list[Path] = []
    test_labels: list[int] = []
    if test_p is not None:
        for d in _class_dirs(test_p, set()):
            if d.name not in classes:
                raise ValueError(f"test_dir class folder {d.name!r} is not a training class {classes}")
            found = _image_files(d)
            test_files += found
            test_labels += [classes.index(d.name)] * len(found)
        if not test_files:
            loose = len(_image_files(test_p))
            hint = f"; its {loose} images lie directly in it" if loose else ""
            raise ValueError(
                f"test_dir {test_p} holds no images in class sub-folders: expected "
                f"{test_p / '<class name>' / '<image>'} with class names from {classes}{hint}"
            )
    if size is not None:
        size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if mode is None:
        mode = _detect_mode(files + unl_files)
    all_train = _read_images(files + unl_files, size, mode)
    x_test = _read_images(test_files, size, mode) if test_files else None
    if x_test is not None and x_test.shape[2:] != all_train.shape[2:]:
        raise ValueError(
            f"test images are {tuple(x_test.shape[2:])} (height, width) but training images "
            f"{tuple(all_train.shape[2:])}; pass size= to resize them all"
        )
    y = np.array(labels + [UNLABELED] * len(unl_files), dtype=np.int64)
    return from_arrays(
        all_train,
        y,
        X_test=x_test,
        y_test=None if x_test is None else np.array(test_labels, dtype=np.int64),
        n_classes=len(classes),
        classes=classes,
        val_fraction=val_fraction,
        seed=seed,
        unlabeled_includes_labeled=unlabeled_includes_labeled,
        name=name or root_p.name,
    )
