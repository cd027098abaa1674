"""Building a run's data, augmentation and model from its configuration."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import torch
from torch import nn

from torchvat.data import (
    ZCA,
    FeatureScaleWarning,
    GlobalContrastZCA,
    RandomTranslateFlip,
    SemiSupervisedData,
    Standardizer,
    fit_transform_data,
    load_dataset,
    select_labels,
    warn_inflated_columns,
)
from torchvat.models import build_model, default_model_name
from torchvat.runs.config import FILE_LOADERS, DataSpec, ModelSpec
from torchvat.runs.errors import DataNotFoundError, UsageError

__all__ = [
    "build_augment",
    "build_run_model",
    "check_labeled_classes",
    "describe_rows",
    "load_run_data",
    "load_run_data_and_transform",
]


def _restrict_labels(data: SemiSupervisedData, n_labels: int, seed: int) -> SemiSupervisedData:
    if n_labels > data.n_labeled:
        raise UsageError(f"--labels must be at most the {data.n_labeled} labeled rows of the file, got {n_labels}")
    keep = select_labels(data.y_labeled, n_labels, n_classes=data.n_classes, seed=seed)
    mask = torch.ones(data.n_labeled, dtype=torch.bool)
    mask[keep] = False
    x_u = data.x_unlabeled
    if not data.unlabeled_includes_labeled:
        x_u = torch.cat([x_u, data.x_labeled[mask]])
    return dataclasses.replace(data, x_labeled=data.x_labeled[keep], y_labeled=data.y_labeled[keep], x_unlabeled=x_u)


def load_run_data(spec: DataSpec, seed: int) -> SemiSupervisedData:
    """Load and prepare the data a :class:`DataSpec` describes.

    Args:
        spec: The data section.
        seed: The seed to use when ``spec.seed`` is ``None``.

    Returns:
        The semi-supervised problem, preprocessed (:func:`load_run_data_and_transform` also returns
        the fitted preprocessing).

    Raises:
        UsageError: For an unknown dataset or an unsupported file type.
        DataNotFoundError: For a missing file (a ``FileNotFoundError``; the message has the path).
    """
    return load_run_data_and_transform(spec, seed)[0]


def _load(spec: DataSpec, s: int) -> SemiSupervisedData:
    """Load the data of a data section with seed ``s``, before preprocessing."""
    options = dict(spec.options)
    try:
        if spec.path is not None:
            p = Path(spec.path).expanduser()
            if not p.exists():
                raise DataNotFoundError(f"data file not found: {p}")
            kind = spec.kind()
            if kind not in FILE_LOADERS:
                raise UsageError(f"--data must be a .npz or .csv file or an image folder, got {p}")
            load, _ = FILE_LOADERS[kind]
            data = load(p, seed=s, **options)
            if spec.n_labels is not None:
                data = _restrict_labels(data, spec.n_labels, s)
        else:
            data = load_dataset(
                str(spec.dataset), root=spec.root, n_labels=spec.n_labels, seed=s, download=spec.download, **options
            )
    except FileNotFoundError as err:
        if isinstance(err, DataNotFoundError):
            raise
        raise DataNotFoundError(str(err)) from err
    return data


def load_run_data_and_transform(
    spec: DataSpec, seed: int, *, reload: bool = False
) -> tuple[SemiSupervisedData, ZCA | Standardizer | None]:
    """:func:`load_run_data`, and the preprocessing fitted on the training inputs (``None`` for none).

    The preprocessing's ``inverse_transform`` maps model inputs back to the data's own space (pixels),
    e.g. to show perturbed images.

    A :class:`~torchvat.data.FeatureScaleWarning` is given only when it applies to the inputs the
    run trains on, and not when a trained run's data are reloaded: one raw column holding most of
    the variance only without ``spec.preprocess``, columns whose rare values standardization
    inflated (:func:`~torchvat.data.warn_inflated_columns`) after ``"standardize"``.

    Args:
        spec: The data section.
        seed: The seed to use when ``spec.seed`` is ``None``.
        reload: Whether the data are reloaded for a trained run (:func:`~torchvat.runs.load_run`):
            its training warned about them already.

    Returns:
        The data (preprocessed) and the fitted preprocessing.

    Raises:
        UsageError: For an unknown dataset or an unsupported file type.
        DataNotFoundError: For a missing file.
    """
    spec.validate()
    s = spec.seed if spec.seed is not None else seed
    with warnings.catch_warnings():
        if reload or spec.preprocess != "none":  # the model does not see the raw columns' scales again
            warnings.simplefilter("ignore", FeatureScaleWarning)
        data = _load(spec, s)
    transform: ZCA | Standardizer | None = None
    if spec.preprocess == "standardize":
        transform = Standardizer()
    elif spec.preprocess == "zca":
        transform = ZCA(eps=spec.zca_eps)
    elif spec.preprocess == "gcn-zca":
        transform = GlobalContrastZCA(eps=spec.zca_eps, gcn_scale=spec.gcn_scale)
    if transform is not None:
        data = fit_transform_data(data, transform)
        if isinstance(transform, Standardizer) and not reload:
            # the inputs the run trains on: standardized near-constant columns are named here
            warn_inflated_columns(data.train_inputs(), where=f"{data.name} after --preprocess standardize")
    if spec.augment != "none" and len(data.input_shape) != 3:
        raise UsageError(f"--augment {spec.augment} needs image inputs [C, H, W], got input shape {data.input_shape}")
    return data, transform


def build_augment(spec: DataSpec, seed: int) -> RandomTranslateFlip | None:
    """The batch augmentation of a data section, seeded (``None`` for ``"none"``).

    Args:
        spec: The data section.
        seed: Seed of the augmentation's generator.

    Returns:
        A :class:`~torchvat.data.RandomTranslateFlip` (its generator's state is saved in checkpoints),
        or ``None``.
    """
    if spec.augment == "none":
        return None
    # padding with the centre of the input space, as the VAT authors' code (see torchvat.data.augment):
    # the mean (0) of whitened or standardized inputs, mid-gray for pixels in [0, 1]
    fill = 0.0 if spec.preprocess in ("zca", "gcn-zca", "standardize") else 0.5
    return RandomTranslateFlip(
        max_shift=spec.max_shift,
        flip=spec.augment == "translate-flip",
        padding_mode="constant",
        fill=fill,
        seed=seed,
    )


def build_run_model(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> tuple[nn.Module, str]:
    """Build the network of a model section for the data.

    Args:
        spec: The model section.
        input_shape: Shape of one input.
        n_classes: Number of classes.

    Returns:
        The model and its resolved name.
    """
    name = spec.name or default_model_name(input_shape)
    spec.validate(name)
    return build_model(name, input_shape=input_shape, n_classes=n_classes, **spec.kwargs), name


def describe_rows(data: SemiSupervisedData) -> str:
    """The labeled and unlabeled row counts of a run's data, in words for reports and the console.

    When the unlabeled pool holds the labeled rows too (as in the papers), both numbers are given:
    the rows without a label, and the pool the regularizer draws from.

    Args:
        data: The data.

    Returns:
        For example ``"30 labeled rows, 148 unlabeled rows (the unlabeled pool: 178 inputs, the labeled rows
        included)"``.

    Example:
        >>> from torchvat.data import from_arrays
        >>> describe_rows(from_arrays(torch.zeros(5, 2), [0, 1, -1, -1, -1]))
        '2 labeled rows, 3 unlabeled rows (the unlabeled pool: 5 inputs, the labeled rows included)'
    """
    n_l, n_u = data.n_labeled, data.n_unlabeled
    if not data.unlabeled_includes_labeled:
        return f"{n_l} labeled rows, {n_u} unlabeled rows"
    return (
        f"{n_l} labeled rows, {n_u - n_l} unlabeled rows (the unlabeled pool: {n_u} inputs, the labeled rows included)"
    )


def check_labeled_classes(data: SemiSupervisedData) -> None:
    """Refuse data whose labeled rows are all of one class (a classifier needs two), before training.

    Args:
        data: The loaded data.

    Raises:
        UsageError: Naming the number of labeled rows and their one class.
    """
    present = torch.unique(data.y_labeled)
    if present.numel() >= 2:
        return
    n = int(data.y_labeled.shape[0])
    if present.numel() == 0:
        raise UsageError(
            "training needs labeled rows of at least 2 classes, got no labeled row (label -1 marks unlabeled rows)"
        )
    index = int(present[0])
    name = data.classes[index] if data.classes is not None and index < len(data.classes) else index
    raise UsageError(
        f"training needs labeled rows of at least 2 classes, got {n} labeled row(s), all of class {name!r}; "
        "label rows of another class too (rows labeled -1 are unlabeled)"
    )
