"""What the subcommands share: the run configuration, data and model building, run folders.

A run configuration has three sections, as in a ``config.toml`` file::

    [data]   dataset name or path, labels, seed, preprocessing, augmentation, loader options
    [model]  name and keyword arguments
    [train]  TrainConfig fields

Every training run writes into its folder ``config.toml`` (the resolved configuration:
``torchvat train --config DIR/config.toml`` repeats it), ``run.json`` (what ``evaluate``
and ``visualize`` need to rebuild the model and the data: the trainer's checkpoint holds
the training state but not the model's constructor arguments nor the dataset), the
trainer's ``metrics.jsonl`` and checkpoints ``last.pt`` / ``best.pt``.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import datetime as _dt
import inspect
import json
import math
import numbers
import os
import re
import shutil
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import torchvat
from torchvat.data import (
    ZCA,
    RandomTranslateFlip,
    SemiSupervisedData,
    Standardizer,
    available_datasets,
    fit_transform_data,
    load_csv,
    load_dataset,
    load_image_folder,
    load_npz,
    select_labels,
)
from torchvat.data.registry import canonical_dataset_name, dataset_options_function
from torchvat.models import available_models, build_model, default_model_name
from torchvat.models.factory import canonical_model_name, model_class, reserved_arguments
from torchvat.train import Callback, TrainConfig, Trainer, TrainResult, is_main_process, seed_everything
from torchvat.train.checkpoint import (
    CheckpointError,
    check_output_dir,
    copy_file_atomic,
    load_checkpoint,
    write_text_atomic,
)
from torchvat.train.distributed import broadcast_object, rank, rank_seed
from torchvat.train.optim import EXTEND_MODES, planned_rate

__all__ = [
    "AUGMENT",
    "PREPROCESS",
    "DataNotFoundError",
    "DataSpec",
    "ModelSpec",
    "RunConfig",
    "RunOutcome",
    "UsageError",
    "build_augment",
    "build_run_model",
    "check_device",
    "check_labeled_classes",
    "check_report_folder",
    "check_run_folder",
    "describe_rows",
    "dump_toml",
    "find_checkpoint",
    "holds_checkpoint",
    "load_run",
    "load_run_data",
    "new_run_dir",
    "output_folder",
    "remove_empty_tree",
    "run_files",
    "staged_output",
    "train_run",
]

PREPROCESS = ("none", "standardize", "zca")
AUGMENT = ("none", "translate", "translate-flip")
RUN_FILE = "run.json"
CONFIG_FILE = "config.toml"


class UsageError(ValueError):
    """A command-line mistake: reported as one line with exit code 2."""


class DataNotFoundError(FileNotFoundError):
    """A file or folder of the data is missing (the CLI adds how to get the data)."""


# ------------------------------------------------------------------ option checking
_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _fits(value: Any, hint: Any) -> bool:
    """Whether a TOML/command-line value fits a type hint (hints this check does not know fit anything)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str or hint is os.PathLike or origin is os.PathLike:
        return isinstance(value, str | os.PathLike)
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, list | tuple):
            return False
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(_fits(v, args[0]) for v in value)
    return True


def _describe(hint: Any) -> str:
    """What a type hint asks for, in words (``int | None`` -> ``an integer``)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        words = [_describe(h) for h in typing.get_args(hint) if h is not type(None)]
        return " or ".join(dict.fromkeys(words))
    if hint in _KINDS:
        return _KINDS[hint]
    if hint is os.PathLike or origin is os.PathLike:
        return "a string"
    if origin in (tuple, list, collections.abc.Sequence):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if origin is tuple and args and len(typing.get_args(hint)) == len(args):
            return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
        return "a list" if not args else f"a list of values that are each {_describe(args[0])}"
    return getattr(hint, "__name__", str(hint))


def _check_call_options(
    options: Mapping[str, Any], fn: Callable[..., Any], *, reserved: Mapping[str, str], what: str, flag: str
) -> None:
    """Check keyword options against the signature and type hints of the function they go to.

    Args:
        options: The options.
        fn: The function (or class) they are passed to.
        reserved: Parameters set otherwise, each with the option that sets it.
        what: What takes the options, for messages (``dataset 'moons'``).
        flag: Where the options come from, for messages.

    Raises:
        UsageError: For an unknown or reserved key, or a value of the wrong kind.
    """
    params = inspect.signature(fn).parameters
    try:
        hints = typing.get_type_hints(fn.__init__ if isinstance(fn, type) else fn)
    except (NameError, TypeError):  # a hint that does not resolve: check the names only
        hints = {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = [name for name, p in params.items() if p.kind in kinds and name not in reserved and name != "self"]
    for key in options:
        if key in reserved:
            raise UsageError(f"{flag}: {key!r} is set by {reserved[key]}, not as an option of {what}")
    unknown = [key for key in options if key not in accepted]
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise UsageError(f"{flag}: {what} takes the options {accepted}, got {unknown} besides")
    for key, value in options.items():
        if key in hints and not _fits(value, hints[key]):
            raise UsageError(f"{flag}: option {key!r} of {what} must be {_describe(hints[key])}, got {value!r}")


_DATA_OPTIONS_FLAG = "--data-option / [data] options"
_DATA_RESERVED = {
    "seed": "--data-seed (or [data] seed)",
    "n_labels": "--labels (or [data] n_labels)",
    "root": "--data-root (or [data] root)",
    "download": "--download (or [data] download)",
    "path": "--data (or [data] path)",
}
#: what sets a model argument build_model derives (torchvat.models.factory.reserved_arguments), in the CLI's words
_MODEL_DERIVED_FROM = {
    "input_shape": "the data's input shape",
    "n_classes": "the data's classes",
    "name": "the model name",
}
#: the loader of each kind of data file (DataSpec.kind), and how messages name it
_FILE_LOADERS: dict[str, tuple[Callable[..., SemiSupervisedData], str]] = {
    "images": (load_image_folder, "an image folder (torchvat.data.load_image_folder)"),
    "npz": (load_npz, "a .npz file (torchvat.data.load_npz)"),
    "csv": (load_csv, "a .csv file (torchvat.data.load_csv)"),
}


# --------------------------------------------------------------------------- TOML writing
def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v, where)}" for k, v in value.items()) + "}"
    raise TypeError(f"{where} must be a TOML value (str, number, bool, list, table), got {type(value).__name__}")


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def dump_toml(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """Serialize ``{section: {key: value}}`` as TOML (``None`` values are left out).

    Nested dicts become sub-tables ``[section.key]``.

    Args:
        tables: Sections of plain values.

    Returns:
        TOML text that ``tomllib.loads`` reads back to the same values.

    Example:
        >>> text = dump_toml({"train": {"eps": 0.5, "amp": None, "extra": {"k": 1}}})
        >>> import tomllib; tomllib.loads(text)
        {'train': {'eps': 0.5, 'extra': {'k': 1}}}
    """
    lines: list[str] = []
    for section, values in tables.items():
        subtables = {k: v for k, v in values.items() if isinstance(v, Mapping)}
        lines.append(f"[{_toml_key(section)}]")
        for key, value in values.items():
            if value is None or key in subtables:
                continue
            lines.append(f"{_toml_key(key)} = {_toml_value(value, f'{section}.{key}')}")
        lines.append("")
        for key, sub in subtables.items():
            lines.append(f"[{_toml_key(section)}.{_toml_key(key)}]")
            lines += [
                f"{_toml_key(k)} = {_toml_value(v, f'{section}.{key}.{k}')}" for k, v in sub.items() if v is not None
            ]
            lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------ configuration
@dataclass
class DataSpec:
    """The ``[data]`` section: which data, how many labels, and how it is prepared.

    Args:
        dataset: A name from :func:`torchvat.data.available_datasets`, or ``None`` with ``path``.
        path: A ``.npz`` or ``.csv`` file or an image folder (rows with label -1 are unlabeled).
        n_labels: Labeled examples (``None``: the dataset's default, or every label of a file).
        seed: Seed of the label selection and synthetic draws (``None``: the training seed).
        root: Directory of the dataset files.
        download: Let torchvision download missing files.
        preprocess: ``"none"``, ``"standardize"`` or ``"zca"`` (fitted on the training inputs).
        zca_eps: Regularizer of the ZCA whitening.
        augment: ``"none"``, ``"translate"`` or ``"translate-flip"`` (images only).
        max_shift: Largest translation in pixels.
        options: More keyword arguments of the loader (e.g. ``n_samples``, ``as_images``, ``n_val``).
    """

    dataset: str | None = "moons"
    path: str | None = None
    n_labels: int | None = None
    seed: int | None = None
    root: str | None = None
    download: bool = False
    preprocess: str = "none"
    zca_eps: float = 0.01
    augment: str = "none"
    max_shift: int = 2
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Check the fields.

        Raises:
            UsageError: For an invalid value (naming the option).
        """
        for key, flag in (("dataset", "--dataset"), ("path", "--data"), ("root", "--data-root")):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str | os.PathLike):
                raise UsageError(f"data.{key} ({flag}) must be a string, got {value!r}")
        if not isinstance(self.download, bool):
            raise UsageError(f"data.download (--download) must be true or false, got {self.download!r}")
        if self.path is None and self.dataset is None:
            raise UsageError("data: give a dataset name or a file path (--dataset or --data), got neither")
        if self.path is None:
            try:
                canonical_dataset_name(str(self.dataset))
            except ValueError:
                raise UsageError(
                    f"unknown dataset {self.dataset!r}; known datasets: {', '.join(available_datasets())}"
                ) from None
        if self.n_labels is not None and (isinstance(self.n_labels, bool) or not isinstance(self.n_labels, int)):
            raise UsageError(f"n_labels must be a positive integer, got {self.n_labels!r}")
        if self.n_labels is not None and self.n_labels < 1:
            raise UsageError(f"--labels must be a positive integer, got {self.n_labels}")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise UsageError(f"data seed must be an integer >= 0, got {self.seed!r}")
        if self.preprocess not in PREPROCESS:
            raise UsageError(f"--preprocess must be one of {', '.join(PREPROCESS)}, got {self.preprocess!r}")
        if self.augment not in AUGMENT:
            raise UsageError(f"--augment must be one of {', '.join(AUGMENT)}, got {self.augment!r}")
        if not isinstance(self.max_shift, int) or self.max_shift < 0:
            raise UsageError(f"max_shift must be an integer >= 0, got {self.max_shift!r}")
        if not isinstance(self.zca_eps, int | float) or not self.zca_eps >= 0:
            raise UsageError(f"zca_eps must be a number >= 0, got {self.zca_eps!r}")
        if not isinstance(self.options, dict):
            raise UsageError(
                f"data.options must be a table of loader options (--data-option KEY=VALUE), "
                f"got {type(self.options).__name__} {self.options!r}"
            )
        self._check_options()

    def _check_options(self) -> None:
        """Check ``options`` against the signature of the loader they go to (unknown for a missing path)."""
        if self.path is None:
            key = canonical_dataset_name(str(self.dataset))
            fn = dataset_options_function(key)
            reserved = {**_DATA_RESERVED, "name": "the dataset", "directory": "the dataset"}
            _check_call_options(self.options, fn, reserved=reserved, what=f"dataset {key!r}", flag=_DATA_OPTIONS_FLAG)
            return
        kind = self.kind()
        if kind not in _FILE_LOADERS:  # a missing folder or another kind of file: refused when loading
            return
        fn, what = _FILE_LOADERS[kind]
        reserved = {**_DATA_RESERVED, "root": "--data (or [data] path)"}
        _check_call_options(self.options, fn, reserved=reserved, what=what, flag=_DATA_OPTIONS_FLAG)

    def kind(self) -> str:
        """What the data are: ``"dataset"`` (by name), ``"npz"``, ``"csv"``, ``"images"`` (a folder) or ``"file"``.

        A missing folder is a ``"file"``; every kind but ``"dataset"`` and ``"file"`` has its loader.
        """
        if self.path is None:
            return "dataset"
        p = Path(self.path).expanduser()
        if p.is_dir():
            return "images"
        return {".npz": "npz", ".csv": "csv"}.get(p.suffix.lower(), "file")

    def with_absolute_paths(self) -> DataSpec:
        """A copy whose ``path``, ``root`` and CSV ``test_path`` option are absolute.

        A run folder's ``config.toml`` and ``run.json`` store them so, so that ``evaluate``,
        ``visualize`` and ``--resume`` find the data from any working directory.

        Returns:
            The copy (``~`` expanded; a folder's ``test_dir`` option stays relative to ``path``).
        """

        def absolute(value: Any) -> Any:
            if isinstance(value, str | os.PathLike):
                return os.path.abspath(os.path.expanduser(value))
            return value

        options = dict(self.options)
        if "test_path" in options:
            options["test_path"] = absolute(options["test_path"])
        return dataclasses.replace(self, path=absolute(self.path), root=absolute(self.root), options=options)

    @property
    def label(self) -> str:
        """A short name for folder names and titles."""
        return Path(self.path).stem if self.path else str(self.dataset)


@dataclass
class ModelSpec:
    """The ``[model]`` section.

    Args:
        name: A name from :func:`torchvat.models.available_models`; ``None`` picks
            :func:`torchvat.models.default_model_name` for the data's input shape.
        kwargs: Keyword arguments of the model's constructor.
    """

    name: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self, name: str | None = None) -> None:
        """Check the name and the constructor arguments (against the model class's signature).

        Args:
            name: The resolved model name, when ``self.name`` is ``None`` (chosen from the data).

        Raises:
            UsageError: For an unknown name, an unknown argument or a value of the wrong kind.
        """
        if self.name is not None:
            try:
                canonical_model_name(self.name)
            except (TypeError, ValueError):
                raise UsageError(f"--model must be one of {', '.join(available_models())}, got {self.name!r}") from None
        if not isinstance(self.kwargs, dict):
            raise UsageError(
                "model.kwargs must be a table of the model's constructor arguments (--model-option KEY=VALUE), "
                f"got {type(self.kwargs).__name__} {self.kwargs!r}"
            )
        name = self.name or name
        if name is None:
            return
        key = canonical_model_name(name)
        cls = model_class(key)
        reserved = {arg: _MODEL_DERIVED_FROM[source] for arg, source in reserved_arguments(key).items()}
        what = f"model {key!r} ({cls.__name__})"
        _check_call_options(self.kwargs, cls, reserved=reserved, what=what, flag="--model-option / [model] kwargs")


@dataclass
class RunConfig:
    """A complete run: data, model and training options.

    Args:
        data: The data section.
        model: The model section.
        train: The training options.
    """

    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "config") -> RunConfig:
        """Build from ``{"data": ..., "model": ..., "train": ...}``.

        Args:
            values: The sections (each optional).
            where: Name of the source, for error messages.

        Returns:
            The configuration.

        Raises:
            UsageError: For unknown sections or keys, or invalid values.
        """
        unknown = sorted(set(values) - {"data", "model", "train"})
        if unknown:
            raise UsageError(f"{where}: unknown section(s) {unknown}; expected [data], [model], [train]")
        data_fields = {f.name for f in dataclasses.fields(DataSpec)}
        data_values = dict(values.get("data", {}))
        bad = sorted(set(data_values) - data_fields)
        if bad:
            raise UsageError(f"{where}: unknown [data] key(s) {bad}; expected some of {sorted(data_fields)}")
        model_values = dict(values.get("model", {}))
        bad = sorted(set(model_values) - {"name", "kwargs"})
        if bad:
            raise UsageError(f"{where}: unknown [model] key(s) {bad}; expected name, kwargs")
        try:
            train = TrainConfig.from_dict(dict(values.get("train", {})))
        except ValueError as err:
            raise UsageError(f"{where}: [train] {err}") from err
        data = DataSpec(**data_values)
        data.validate()
        model = ModelSpec(**model_values)
        model.validate()
        return cls(data=data, model=model, train=train)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> RunConfig:
        """Read a ``config.toml`` file.

        Args:
            path: The file.

        Returns:
            The configuration.

        Raises:
            FileNotFoundError: If the file is missing.
            UsageError: If it is not valid TOML or has invalid values.
        """
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        try:
            values = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise UsageError(f"{p} is not valid TOML: {err}") from err
        return cls.from_dict(values, where=str(p))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The three sections as plain dicts.

        ``train.out_dir`` and ``train.progress`` are left out: they say where and how a
        run is shown, not what it computes.

        Returns:
            ``{"data": ..., "model": ..., "train": ...}``.
        """
        train = self.train.to_dict()
        for key in ("out_dir", "progress"):
            train.pop(key, None)
        return {
            "data": dataclasses.asdict(self.data),
            "model": {"name": self.model.name, "kwargs": dict(self.model.kwargs)},
            "train": train,
        }

    def to_toml(self) -> str:
        """The configuration as TOML text (see :meth:`to_dict`).

        Returns:
            The text.
        """
        return dump_toml(self.to_dict())


def new_run_dir(prefix: str, base: str | os.PathLike[str] = "runs") -> Path:
    """A new, not yet existing folder ``base/prefix-YYYYmmdd-HHMMSS`` (suffixed if taken).

    Args:
        prefix: Start of the folder name.
        base: Parent folder.

    Returns:
        The path (not created).
    """
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(base) / f"{prefix}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(base) / f"{prefix}-{stamp}-{n}"
    return path


# ----------------------------------------------------------------------------- data
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


def load_run_data_and_transform(spec: DataSpec, seed: int) -> tuple[SemiSupervisedData, ZCA | Standardizer | None]:
    """:func:`load_run_data`, and the preprocessing fitted on the training inputs (``None`` for none).

    The preprocessing's ``inverse_transform`` maps model inputs back to the data's own space (pixels),
    e.g. to show perturbed images.
    """
    spec.validate()
    s = spec.seed if spec.seed is not None else seed
    options = dict(spec.options)
    try:
        if spec.path is not None:
            p = Path(spec.path).expanduser()
            if not p.exists():
                raise DataNotFoundError(f"data file not found: {p}")
            kind = spec.kind()
            if kind not in _FILE_LOADERS:
                raise UsageError(f"--data must be a .npz or .csv file or an image folder, got {p}")
            load, _ = _FILE_LOADERS[kind]
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
    transform: ZCA | Standardizer | None = None
    if spec.preprocess == "standardize":
        transform = Standardizer()
    elif spec.preprocess == "zca":
        transform = ZCA(eps=spec.zca_eps)
    if transform is not None:
        data = fit_transform_data(data, transform)
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
    fill = 0.0 if spec.preprocess in ("zca", "standardize") else 0.5
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


# --------------------------------------------------------------------------- training
#: the files that make a folder a training run's folder (besides its ``*.pt`` checkpoints)
RUN_FILES = (CONFIG_FILE, RUN_FILE, "metrics.jsonl")
#: what ``--overwrite`` deletes of the earlier run before the new one writes its own files: its checkpoints,
#: report, TensorBoard events and the default outputs of ``evaluate`` and ``visualize``
_REPLACED_FILES = (
    "last.pt",
    "last.prev*.pt",
    "best.pt",
    ".last.pt.*.tmp",
    ".best.pt.*.tmp",
    "report.md",
    "curves.png",
    "tensorboard/events.out.tfevents.*",
    "evaluate/robustness.png",
    "evaluate/robustness.csv",
    "evaluate/report.md",
    "perturbations.png",
)


def run_files(directory: str | os.PathLike[str]) -> list[str]:
    """The names of a training run's files in ``directory`` (none: it holds no run).

    Args:
        directory: A folder (it need not exist).

    Returns:
        ``config.toml``, ``run.json``, ``metrics.jsonl`` and ``*.pt`` files found there.

    Example:
        >>> import tempfile
        >>> run_files(tempfile.mkdtemp())
        []
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    names = [name for name in RUN_FILES if (d / name).is_file()]
    return names + sorted(f.name for f in d.glob("*.pt") if f.is_file())


def holds_checkpoint(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds a training checkpoint (``*.pt``): a run that is kept unless replaced.

    Args:
        directory: A folder (it need not exist).

    Returns:
        Whether a checkpoint file is there.

    Example:
        >>> import tempfile
        >>> holds_checkpoint(tempfile.mkdtemp())
        False
    """
    d = Path(directory)
    return d.is_dir() and any(f.is_file() for f in d.glob("*.pt"))


def _branches(resume: str | os.PathLike[str] | None, directory: str | os.PathLike[str]) -> bool:
    """Whether a run resumed from checkpoint ``resume`` into ``directory`` branches into a new folder.

    It does when ``directory`` is not the checkpoint's own folder (a path that cannot be resolved
    counts as another folder); a run that is not resumed does not branch.

    Args:
        resume: The checkpoint the run continues from, or ``None``.
        directory: The run's folder.

    Returns:
        Whether it branches.

    Example:
        >>> _branches("A/last.pt", "A"), _branches("A/last.pt", "B"), _branches(None, "B")
        (False, True, False)
    """
    return resume is not None and not _same_dir(Path(resume).parent, Path(directory))


def check_run_folder(
    directory: str | os.PathLike[str],
    *,
    resume: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    branched: bool | None = None,
) -> None:
    """Refuse to start a run in a folder that holds another run, unless it is continued or replaced.

    Args:
        directory: The new run's folder.
        resume: The checkpoint the run continues from; its own folder may be continued.
        overwrite: Replace a run found there (``--overwrite``).
        branched: Whether the run branches from ``resume`` into another folder, when the caller
            knows it already (``None``: computed from ``resume`` and ``directory``).

    A folder holds a run when it holds a checkpoint (``*.pt``): the ``config.toml``, ``run.json``
    and ``metrics.jsonl`` of a run that failed before its first checkpoint protect nothing, and
    the same command may be run there again.

    Raises:
        UsageError: If ``directory`` holds a run (naming its files and the options).
    """
    d = Path(directory)
    if branched is None:
        branched = _branches(resume, d)
    if overwrite or (resume is not None and not branched):
        return
    held = run_files(d)
    if not holds_checkpoint(d):  # the files of a run that failed before its first checkpoint: nothing to keep
        return
    if resume is None:
        raise UsageError(
            f"--out {d} holds a run already ({', '.join(held)}); continue it with --resume, "
            "replace it with --overwrite, or give another --out"
        )
    raise UsageError(
        f"--out {d} holds another run ({', '.join(held)}) than the checkpoint {resume} to resume; "
        "replace it with --overwrite, or give another --out (an empty or new folder)"
    )


def check_report_folder(
    directory: str | os.PathLike[str],
    *,
    subdirs: collections.abc.Iterable[str] = (),
    overwrite: bool = False,
    what: str = "report",
) -> None:
    """Check the folder of a ``demo`` or ``compare`` report before anything is written there.

    Args:
        directory: The folder (``--out``).
        subdirs: The run folders it will hold.
        overwrite: Replace an earlier report and its runs (``--overwrite``).
        what: The command's output, for messages (``"demo"``, ``"comparison"``).

    Raises:
        UsageError: If the path is a file, or holds runs or a report (without ``overwrite``).
    """
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise UsageError(f"--out {d} exists and is not a directory; give a new or empty folder")
    if overwrite or not d.is_dir():
        return
    held = [name for name in ("report.md", "results.csv", "summary.csv") if (d / name).is_file()]
    held += run_files(d) if holds_checkpoint(d) else []
    held += [f"{sub}/{name}" for sub in subdirs if holds_checkpoint(d / sub) for name in run_files(d / sub)]
    if held:
        shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
        raise UsageError(
            f"--out {d} holds an earlier {what} ({shown}); replace it with --overwrite, or give another --out"
        )


def remove_empty_tree(directory: str | os.PathLike[str]) -> None:
    """Remove ``directory`` and its sub-folders as far as they hold no file (after a failed command).

    Args:
        directory: The folder a command created.
    """
    d = Path(directory)
    if not d.is_dir():
        return
    for sub, _, _ in sorted(os.walk(d), key=lambda entry: -len(entry[0])):  # deepest first
        with contextlib.suppress(OSError):  # not empty: kept
            os.rmdir(sub)


@contextlib.contextmanager
def output_folder(directory: str | os.PathLike[str]) -> collections.abc.Iterator[Path]:
    """Create a command's output folder; if the block fails, remove what of it a new folder left empty.

    Args:
        directory: The folder (checked writable with :func:`~torchvat.train.checkpoint.check_output_dir`).

    Yields:
        The folder.
    """
    created = not Path(directory).exists()
    out = check_output_dir(directory)
    try:
        yield out
    except BaseException:
        if created:
            remove_empty_tree(out)
        raise


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _carry_history(checkpoint: Path, out: Path, trainer: Trainer) -> list[str]:
    """Copy a run's history up to the resumed checkpoint into the folder of the run that branches from it.

    ``metrics.jsonl`` (the trainer drops its lines past the resumed iteration when training
    starts), the checkpoint itself as ``last.pt``, and ``best.pt`` when it is the best record
    the checkpoint holds (not one written after the checkpoint).

    Returns:
        The names copied.
    """
    src = checkpoint.parent
    copied = []
    if (src / "metrics.jsonl").is_file():
        copy_file_atomic(src / "metrics.jsonl", out / "metrics.jsonl")
        copied.append("metrics.jsonl")
    copy_file_atomic(checkpoint, out / "last.pt")
    copied.append("last.pt")
    best = src / "best.pt"
    if best.is_file() and trainer.best:
        try:
            best_step = int(load_checkpoint(best).get("step", -1))
        except (CheckpointError, OSError):
            best_step = -1
        if best_step == int(trainer.best.get("step", -2)):
            copy_file_atomic(best, out / "best.pt")
            copied.append("best.pt")
    return copied


# ------------------------------------------------------------------ devices and labels
def available_devices() -> list[str]:
    """The devices this machine can train on, as ``--device`` spells them.

    Returns:
        ``auto``, ``cpu`` and each CUDA device (``cuda:0``, ...) and ``mps`` that is available.

    Example:
        >>> available_devices()[:2]
        ['auto', 'cpu']
    """
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def check_device(device: str | torch.device) -> None:
    """Refuse a training device this machine does not have, before anything is loaded or written.

    Args:
        device: ``"auto"`` or a device string (``--device``).

    Raises:
        UsageError: For a device string torch does not parse, or a device that is not available here
            (one line naming the devices there are).

    Example:
        >>> check_device("cpu")
    """
    if isinstance(device, str) and device == "auto":
        return
    there = f"devices here: {', '.join(available_devices())}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device must be a device such as cpu or cuda:0, got {device!r}; {there}") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine; {there}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s); {there}")
        return
    backend = getattr(torch.backends, dev.type, None) or getattr(torch, dev.type, None)
    is_available = getattr(backend, "is_available", None)
    if callable(is_available) and not is_available():
        raise UsageError(f"--device {device}: {dev.type} is not available on this machine; {there}")


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


# ---------------------------------------------------------------------- staged folders
#: the folder, inside a run's or report's folder, where a new run is built until it has a checkpoint
STAGING_DIR = ".torchvat-staging"


def _new_staging(out: Path) -> Path:
    """An empty staging folder in ``out`` (one left by a killed command is removed first)."""
    staging = out / STAGING_DIR
    if is_main_process():
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    return staging


def _commit_staged(staging: Path, out: Path) -> None:
    """Move what ``staging`` holds into ``out``, then delete the earlier run files the new ones did not replace.

    Every file is moved with ``os.replace`` (the new file replaces the old one of that name
    atomically; files open for writing stay open on the moved file). Then, in every folder that
    received a run (a ``*.pt`` file), the earlier run's checkpoints, report and evaluations that the
    new run has not written are deleted (:data:`_REPLACED_FILES`), and folders left empty removed.
    """
    moved: set[Path] = set()
    run_dirs: set[Path] = set()
    for root, dirs, files in os.walk(staging):
        dirs.sort()
        rel = Path(root).relative_to(staging)
        target_dir = out / rel
        target_dir.mkdir(parents=True, exist_ok=True)
        for name in sorted(files):
            os.replace(Path(root) / name, target_dir / name)
            moved.add(target_dir / name)
            if name.endswith(".pt"):
                run_dirs.add(target_dir)
    for run_dir in run_dirs:
        for pattern in _REPLACED_FILES:
            for f in run_dir.glob(pattern):
                if f not in moved:
                    with contextlib.suppress(FileNotFoundError):
                        f.unlink()
        for sub in ("evaluate", "tensorboard"):
            with contextlib.suppress(OSError):  # kept when it holds other files
                (run_dir / sub).rmdir()
    shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def staged_output(out: str | os.PathLike[str]) -> collections.abc.Iterator[Path]:
    """Write a command's output into a staging folder and move it into ``out`` only when it succeeds.

    ``demo`` and ``compare`` write their runs and report this way: until the command has
    finished, an earlier report and its runs in ``out`` are not touched; a failure removes the
    staging folder and leaves ``out`` as it was.

    Args:
        out: The output folder (it exists).

    Yields:
        The staging folder (``out/.torchvat-staging``).
    """
    staging = _new_staging(Path(out))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if is_main_process():
        _commit_staged(staging, Path(out))


class _SwapInAtFirstCheckpoint(Callback):
    """Move a new run from its staging folder into its run folder when it has written its first checkpoint.

    Until then the run folder is untouched: an earlier run there (``--overwrite``) outlives a new
    run that fails before its first checkpoint. After the move the trainer writes into the run
    folder (its ``config.out_dir`` is updated; the metrics file stays open on the moved file).
    """

    def __init__(self, staging: Path, out: Path) -> None:
        self.staging = staging
        self.out = out
        self.done = False

    def on_step_end(self, **kwargs: Any) -> None:
        """Swap the run in once the checkpoint callback has written a checkpoint (not one a branch copied)."""
        trainer = kwargs["trainer"]
        if not self.done and ("last" in trainer.paths or "best" in trainer.paths):
            self.swap(trainer)

    def swap(self, trainer: Trainer) -> None:
        """Move the staged run into the run folder and point the trainer there.

        Args:
            trainer: The trainer writing the run.
        """
        if self.done:
            return
        if is_main_process():
            _commit_staged(self.staging, self.out)
        trainer.config = trainer.config.replace(out_dir=str(self.out))
        for key, value in list(trainer.paths.items()):
            if isinstance(value, str) and Path(value).parent == self.staging:
                trainer.paths[key] = str(self.out / Path(value).name)
        self.done = True

    def discard(self, err: BaseException) -> None:
        """Remove the staging folder of a run that failed before its first checkpoint (``out`` is untouched).

        A message naming a file of the staging folder (the weights before a non-finite first
        iteration) is reworded: the file is gone.
        """
        if self.done:
            return
        shutil.rmtree(self.staging, ignore_errors=True)
        if err.args and isinstance(err.args[0], str) and str(self.staging) in err.args[0]:
            text = re.sub(r", and the weights before it are saved in [^;\s]+", "", err.args[0])
            text = text.replace(str(self.staging), str(self.out))
            err.args = (f"{text}; no checkpoint of a trained iteration was written: the run folder is left as it was",)


@dataclass
class RunOutcome:
    """One finished training run.

    Args:
        result: What :meth:`Trainer.fit` returned.
        trainer: The trainer (its model is trained).
        data: The data it trained on.
        config: The resolved configuration (model name and eps filled in).
        out_dir: The run's folder.
        seconds: Wall time of training (of this process: the resumed part of a resumed run).
        start_step: The iteration training started from (0, or the resumed checkpoint's).
        carried: Files copied from the resumed run's folder into ``out_dir`` (a branched run).
        extension: What a resume with another number of iterations does to the learning rate
            (``None`` when the number is the run's own).
    """

    result: TrainResult
    trainer: Trainer
    data: SemiSupervisedData
    config: RunConfig
    out_dir: Path
    seconds: float
    start_step: int = 0
    carried: list[str] = field(default_factory=list)
    extension: str | None = None


def _schedule_values(trainer: Trainer, state: dict[str, Any]) -> tuple[int, float, float]:
    """The saved run's plan length and the learning rate and ``beta1`` of its last trained iteration.

    A checkpoint written before the schedule recorded its plan gets it from its config (in ``state``).
    """
    saved = state["schedule"]
    saved_config = state.get("config") or {}
    cfg = trainer.config
    if "total" not in saved:  # an older checkpoint: its plan from its config
        total = int(saved_config.get("iterations", cfg.iterations))
        fraction = float(saved_config.get("decay_fraction", cfg.decay_fraction))
        saved.update(total=total, decay_start=total - round(fraction * total), cap=None)
    lr, beta1 = planned_rate(
        saved,
        max(int(state["step"]) - 1, 0),
        kind=str(saved_config.get("schedule", cfg.schedule)),
        beta1=float(saved_config.get("beta1", cfg.beta1)),
        decay_beta1=float(saved_config.get("decay_beta1", cfg.decay_beta1)),
    )
    return int(saved["total"]), lr, beta1


def _describe_extension(trainer: Trainer, state: dict[str, Any], before: tuple[int, float, float]) -> str | None:
    """What resuming with another number of iterations does to the schedule (``None``: the same number)."""
    total, old_lr, old_beta1 = before
    step, new_total = trainer.step, trainer.config.iterations
    if total == new_total or step == 0:
        return None
    group = trainer.optimizer.param_groups[0]
    new_lr = float(group["lr"])
    change = f"the learning rate goes from {old_lr:.3g} (iteration {step}) to {new_lr:.3g} (iteration {step + 1})"
    if "betas" in group and float(group["betas"][0]) != old_beta1:
        change += f", Adam's beta1 from {old_beta1:g} to {float(group['betas'][0]):g}"
    kind = trainer.config.schedule
    if trainer.schedule.extend == "continue":
        how = (
            f"--extend continue: the rate never goes back up; it stays at most {old_lr:.3g} until the "
            f"{kind!r} schedule over {new_total} iterations comes down to it"
        )
    else:
        how = (
            f"the {kind!r} schedule is recomputed over {new_total} iterations (--extend recompute); "
            "--extend continue keeps the rate the run ended with instead"
        )
    return f"--iters {new_total} extends the run planned for {total} iterations: {change}; {how}"


def train_run(
    config: RunConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    data: SemiSupervisedData | None = None,
    on_ready: Callable[[Trainer, RunConfig, bool], None] | None = None,
    recipe: str | None = None,
    extend: str = "recompute",
    notify: Callable[[str], None] | None = None,
) -> RunOutcome:
    """Load the data, build the model, train, and write ``config.toml`` and ``run.json``.

    A folder that holds another run (a checkpoint) is refused (before anything is written) unless
    the run continues it (``resume`` from its checkpoint) or ``overwrite`` replaces it. A new run
    (and a branch) is built in a staging folder, ``out_dir/.torchvat-staging``, and moved into
    ``out_dir`` when it has written its first checkpoint: only then are the earlier run's
    checkpoints, report and evaluations deleted. A run that fails before (bad data or model
    options, labeled rows of one class, a non-finite first iteration, an unavailable device)
    leaves ``out_dir`` as it was. A run resumed from another folder's checkpoint branches from it:
    that folder's ``metrics.jsonl`` (up to the checkpoint), the checkpoint (as ``last.pt``) and
    its ``best.pt`` (when it is the checkpoint's best record) are copied into the new run first.

    Args:
        config: The run configuration (``train.out_dir`` is replaced by ``out_dir``).
        out_dir: The run's folder (created).
        resume: A checkpoint to continue from.
        overwrite: Replace a run found in ``out_dir``.
        progress: Whether to show the trainer's progress bar (never when ``config.train.progress``
            is off, e.g. by ``--no-progress``).
        data: Already loaded data (skips loading; ``config.data`` must describe it).
        on_ready: Called with the trainer, the resolved configuration and whether the run
            branches from ``resume`` into another folder, ``out_dir``, before training (e.g. to
            print the chosen eps).
        recipe: The recipe the configuration came from, kept in ``run.json``.
        extend: What a resume with another number of iterations does with the learning-rate
            schedule: ``"recompute"`` it over the new total, or ``"continue"`` from the rate the run
            ended with (see :class:`~torchvat.train.IterationSchedule`).
        notify: Called with a sentence when the resume changes the schedule (old and new rate).

    Returns:
        The outcome.

    Raises:
        UsageError: If ``out_dir`` holds another run, the resume is refused, the device is not
            available, or the labeled rows are of one class.
    """
    import time

    if extend not in EXTEND_MODES:
        raise UsageError(f"extend (--extend) must be one of {', '.join(EXTEND_MODES)}, got {extend!r}")
    check_device(config.train.device)
    branched = _branches(resume, out_dir)  # resumed from another folder's checkpoint
    # rank 0 looks before it writes anything; every process takes its answer
    problem = None
    if is_main_process():
        try:
            check_run_folder(out_dir, resume=resume, overwrite=overwrite, branched=branched)
        except UsageError as err:
            problem = str(err)
    problem = broadcast_object(problem)
    if problem is not None:
        raise UsageError(problem)
    # a new run (or a branch) is built in a staging folder and moved in at its first checkpoint
    staged = resume is None or branched
    seed = config.train.seed
    # created and writable before the data are loaded; a new folder left empty by a failure here is removed
    with output_folder(out_dir) as out:
        if data is None:
            data = load_run_data(config.data, seed)
        check_labeled_classes(data)
        seed_everything(seed)
        model, model_name = build_run_model(config.model, data.input_shape, data.n_classes)
        staging = _new_staging(out) if staged else None
        swap = _SwapInAtFirstCheckpoint(staging, out) if staging is not None else None
        try:
            writes_to = staging if staging is not None else out
            train_cfg = config.train.replace(out_dir=str(writes_to), progress=progress and config.train.progress)
            augment_seed = seed if rank() == 0 else rank_seed(seed, rank(), 4)  # own augmentations per process
            trainer = Trainer(model, data, config=train_cfg, augment=build_augment(config.data, augment_seed))
            if swap is not None:  # after the checkpoint callback: it sees the checkpoint that callback wrote
                trainer.callbacks.append(swap)
            if resume is not None:  # before the run folder's files are rewritten: a refused resume changes none
                state = load_checkpoint(resume)
                before = _schedule_values(trainer, state)
                trainer.schedule.extend = extend
                trainer.load_state_dict(state)
                if trainer.step >= train_cfg.iterations:
                    raise UsageError(
                        f"the checkpoint {resume} is at iteration {trainer.step} and --iters is "
                        f"{train_cfg.iterations}: nothing to train; pass --iters above {trainer.step}"
                    )
                extension = _describe_extension(trainer, state, before)
            else:
                extension = None
            start_step = trainer.step
            resolved_data = dataclasses.replace(
                config.data.with_absolute_paths(), seed=config.data.seed if config.data.seed is not None else seed
            )
            eps = trainer.eps if trainer.eps is not None else config.train.eps
            resolved = RunConfig(
                data=resolved_data,
                model=ModelSpec(name=model_name, kwargs=dict(config.model.kwargs)),
                train=config.train.replace(eps=eps, out_dir=None),
            )
            run_info = {
                "torchvat_version": torchvat.__version__,
                "model": {"name": model_name, "kwargs": dict(config.model.kwargs)},
                "input_shape": list(data.input_shape),
                "n_classes": data.n_classes,
                "classes": data.classes,
                "dataset_name": data.name,
                "data": dataclasses.asdict(resolved_data),
                "method": trainer.method.name,
                "eps": trainer.eps,
                "seed": seed,
                "recipe": recipe,
                "config": CONFIG_FILE,
            }
            carried: list[str] = []
            if is_main_process():  # distributed: rank 0 writes the run folder
                if branched:
                    carried = _carry_history(Path(resume), writes_to, trainer)  # type: ignore[arg-type]
                write_text_atomic(writes_to / CONFIG_FILE, resolved.to_toml())
                write_text_atomic(writes_to / RUN_FILE, json.dumps(run_info, indent=2) + "\n")
            if on_ready is not None:
                on_ready(trainer, resolved, branched)
            if extension is not None and notify is not None:
                notify(extension)
            start = time.perf_counter()
            result = trainer.fit()  # from the loaded state when resuming
            seconds = time.perf_counter() - start
            if swap is not None:  # a run that ended before its first periodic checkpoint: its last.pt now
                swap.swap(trainer)
                result.paths.update(trainer.paths)
        except BaseException as err:
            if swap is not None:
                swap.discard(err)
            raise
    return RunOutcome(
        result=result,
        trainer=trainer,
        data=data,
        config=resolved,
        out_dir=out,
        seconds=seconds,
        start_step=start_step,
        carried=carried,
        extension=extension,
    )


def find_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Resolve a checkpoint argument: a ``.pt`` file, or a run folder (its ``last.pt``, else ``best.pt``).

    Args:
        path: The file or folder.

    Returns:
        The checkpoint file.

    Raises:
        FileNotFoundError: If nothing is found (the message has the path).
    """
    p = Path(path).expanduser()
    if p.is_dir():
        for name in ("last.pt", "best.pt"):
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"no checkpoint (best.pt or last.pt) in run folder: {p}")
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    return p


def load_run(
    path: str | os.PathLike[str], *, device: str = "cpu"
) -> tuple[nn.Module, SemiSupervisedData, dict[str, Any]]:
    """Rebuild a trained model and its data from a checkpoint and the ``run.json`` beside it.

    Args:
        path: A checkpoint file or a run folder.
        device: Where to put the model.

    Returns:
        The model (eval mode, weights loaded), the data (prepared as in training) and the
        run description (``run.json`` plus ``checkpoint``, ``step``, ``eps``, ``norm`` and ``transform``, the
        fitted preprocessing or ``None``).

    Raises:
        FileNotFoundError: If the checkpoint or its ``run.json`` is missing.
        UsageError: If ``run.json`` is unreadable.
    """
    ckpt = find_checkpoint(path)
    info_path = ckpt.parent / RUN_FILE
    if not info_path.is_file():
        raise FileNotFoundError(
            f"{RUN_FILE} not found beside the checkpoint: {info_path} (it is written by `torchvat train`; "
            "a checkpoint written by another program lacks the model and data description)"
        )
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        spec = DataSpec(**info["data"])
        model_spec = ModelSpec(name=info["model"]["name"], kwargs=dict(info["model"].get("kwargs", {})))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise UsageError(f"{info_path} is not a valid run description: {err}") from err
    state = load_checkpoint(ckpt, map_location="cpu")
    data, transform = load_run_data_and_transform(spec, int(info.get("seed", 0)))
    model, _ = build_run_model(model_spec, data.input_shape, data.n_classes)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    info = {
        **info,
        "checkpoint": str(ckpt),
        "step": int(state.get("step", 0)),
        "eps": state.get("eps", info.get("eps")),
        "norm": (state.get("config") or {}).get("norm", "l2"),
        "transform": transform,  # the fitted preprocessing (None for none): its inverse gives the data's own space
    }
    return model, data, info


def l2_size(eps: float, norm: str, input_shape: tuple[int, ...]) -> float:
    """The L2 length of a training perturbation of size ``eps`` in ``norm`` (an L-inf box corner: eps * sqrt(d))."""
    return eps * math.sqrt(math.prod(input_shape)) if norm == "linf" else eps
