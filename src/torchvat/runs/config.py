"""The run configuration: the ``[data]``, ``[model]`` and ``[train]`` sections of a ``config.toml``."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchvat.data import (
    SemiSupervisedData,
    available_datasets,
    load_csv,
    load_image_folder,
    load_npz,
)
from torchvat.data.registry import canonical_dataset_name, dataset_options_function
from torchvat.models import available_models
from torchvat.models.factory import canonical_model_name, model_class, reserved_arguments
from torchvat.runs._options import check_call_options
from torchvat.runs._toml import dump_toml
from torchvat.runs.errors import UsageError
from torchvat.train import TrainConfig

__all__ = ["AUGMENT", "PREPROCESS", "DataSpec", "ModelSpec", "RunConfig"]


PREPROCESS = ("none", "standardize", "zca", "gcn-zca")
AUGMENT = ("none", "translate", "translate-flip")

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
FILE_LOADERS: dict[str, tuple[Callable[..., SemiSupervisedData], str]] = {
    "images": (load_image_folder, "an image folder (torchvat.data.load_image_folder)"),
    "npz": (load_npz, "a .npz file (torchvat.data.load_npz)"),
    "csv": (load_csv, "a .csv file (torchvat.data.load_csv)"),
}


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
        preprocess: ``"none"``, ``"standardize"``, ``"zca"`` or ``"gcn-zca"`` (global contrast
            normalization to the norm ``gcn_scale``, then ZCA; fitted on the training inputs).
        zca_eps: Regularizer of the ZCA whitening.
        augment: ``"none"``, ``"translate"`` or ``"translate-flip"`` (images only).
        max_shift: Largest translation in pixels.
        options: More keyword arguments of the loader (e.g. ``n_samples``, ``as_images``, ``n_val``).
        gcn_scale: The norm of every example after the global contrast normalization of
            ``"gcn-zca"`` (55: Oliver et al. 2018).
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
    gcn_scale: float = 55.0

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
        if isinstance(self.gcn_scale, bool) or not isinstance(self.gcn_scale, int | float) or not self.gcn_scale > 0:
            raise UsageError(f"gcn_scale must be a number > 0, got {self.gcn_scale!r}")
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
            check_call_options(self.options, fn, reserved=reserved, what=f"dataset {key!r}", flag=_DATA_OPTIONS_FLAG)
            return
        kind = self.kind()
        if kind not in FILE_LOADERS:  # a missing folder or another kind of file: refused when loading
            return
        fn, what = FILE_LOADERS[kind]
        reserved = {**_DATA_RESERVED, "root": "--data (or [data] path)"}
        check_call_options(self.options, fn, reserved=reserved, what=what, flag=_DATA_OPTIONS_FLAG)

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
        check_call_options(self.kwargs, cls, reserved=reserved, what=what, flag="--model-option / [model] kwargs")


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
