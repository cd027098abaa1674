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

import dataclasses
import datetime as _dt
import json
import math
import os
import tomllib
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
from torchvat.models import build_model, default_model_name
from torchvat.train import TrainConfig, Trainer, TrainResult, is_main_process, seed_everything
from torchvat.train.checkpoint import check_output_dir, load_checkpoint, write_text_atomic
from torchvat.train.distributed import rank, rank_seed

__all__ = [
    "AUGMENT",
    "PREPROCESS",
    "DataSpec",
    "ModelSpec",
    "RunConfig",
    "RunOutcome",
    "UsageError",
    "build_augment",
    "build_run_model",
    "dump_toml",
    "find_checkpoint",
    "load_run",
    "load_run_data",
    "new_run_dir",
    "train_run",
]

PREPROCESS = ("none", "standardize", "zca")
AUGMENT = ("none", "translate", "translate-flip")
RUN_FILE = "run.json"
CONFIG_FILE = "config.toml"


class UsageError(ValueError):
    """A command-line mistake: reported as one line with exit code 2."""


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
        if self.path is None and self.dataset is None:
            raise UsageError("data: give a dataset name or a file path (--dataset or --data), got neither")
        if self.path is None:
            key = str(self.dataset).strip().lower().replace("_", "-")
            aliases = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "two-moons": "moons"}
            if aliases.get(key, key) not in available_datasets():
                raise UsageError(f"unknown dataset {self.dataset!r}; known datasets: {', '.join(available_datasets())}")
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
            raise UsageError(f"data.options must be a table, got {type(self.options).__name__}")

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
        return cls(data=data, model=ModelSpec(**model_values), train=train)

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
        FileNotFoundError: For a missing file (the message has the path).
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
    if spec.path is not None:
        p = Path(spec.path).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"data file not found: {p}")
        if p.is_dir():
            data = load_image_folder(p, seed=s, **options)
        elif p.suffix.lower() == ".npz":
            data = load_npz(p, seed=s, **options)
        elif p.suffix.lower() == ".csv":
            data = load_csv(p, seed=s, **options)
        else:
            raise UsageError(f"--data must be a .npz or .csv file or an image folder, got {p}")
        if spec.n_labels is not None:
            data = _restrict_labels(data, spec.n_labels, s)
    else:
        data = load_dataset(
            str(spec.dataset), root=spec.root, n_labels=spec.n_labels, seed=s, download=spec.download, **options
        )
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
    return build_model(name, input_shape=input_shape, n_classes=n_classes, **spec.kwargs), name


# --------------------------------------------------------------------------- training
@dataclass
class RunOutcome:
    """One finished training run.

    Args:
        result: What :meth:`Trainer.fit` returned.
        trainer: The trainer (its model is trained).
        data: The data it trained on.
        config: The resolved configuration (model name and eps filled in).
        out_dir: The run's folder.
        seconds: Wall time of training.
    """

    result: TrainResult
    trainer: Trainer
    data: SemiSupervisedData
    config: RunConfig
    out_dir: Path
    seconds: float


def train_run(
    config: RunConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: str | os.PathLike[str] | None = None,
    progress: bool = True,
    data: SemiSupervisedData | None = None,
    on_ready: Callable[[Trainer, RunConfig], None] | None = None,
) -> RunOutcome:
    """Load the data, build the model, train, and write ``config.toml`` and ``run.json``.

    Args:
        config: The run configuration (``train.out_dir`` is replaced by ``out_dir``).
        out_dir: The run's folder (created).
        resume: A checkpoint to continue from.
        progress: Whether to show the trainer's progress bar (never when ``config.train.progress``
            is off, e.g. by ``--no-progress``).
        data: Already loaded data (skips loading; ``config.data`` must describe it).
        on_ready: Called with the trainer and the resolved configuration before training
            (e.g. to print the chosen eps).

    Returns:
        The outcome.
    """
    import time

    created = not Path(out_dir).exists()
    out = check_output_dir(out_dir)  # created and writable, before the data are loaded
    seed = config.train.seed
    try:
        if data is None:
            data = load_run_data(config.data, seed)
        seed_everything(seed)
        model, model_name = build_run_model(config.model, data.input_shape, data.n_classes)
        train_cfg = config.train.replace(out_dir=str(out), progress=progress and config.train.progress)
        augment_seed = seed if rank() == 0 else rank_seed(seed, rank(), 4)  # own augmentations per process
        trainer = Trainer(model, data, config=train_cfg, augment=build_augment(config.data, augment_seed))
        if resume is not None:  # before the run folder's files are rewritten: a refused resume changes none
            trainer.load_state_dict(load_checkpoint(resume))
            if trainer.step >= train_cfg.iterations:
                raise UsageError(
                    f"the checkpoint {resume} is at iteration {trainer.step} and --iters is "
                    f"{train_cfg.iterations}: nothing to train; pass --iters above {trainer.step}"
                )
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):  # leave no empty run folder behind
            out.rmdir()
        raise
    resolved_data = dataclasses.replace(config.data, seed=config.data.seed if config.data.seed is not None else seed)
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
        "config": CONFIG_FILE,
    }
    if is_main_process():  # distributed: rank 0 writes the run folder
        write_text_atomic(out / CONFIG_FILE, resolved.to_toml())
        write_text_atomic(out / RUN_FILE, json.dumps(run_info, indent=2) + "\n")
    if on_ready is not None:
        on_ready(trainer, resolved)
    start = time.perf_counter()
    result = trainer.fit()  # from the loaded state when resuming
    seconds = time.perf_counter() - start
    return RunOutcome(result=result, trainer=trainer, data=data, config=resolved, out_dir=out, seconds=seconds)


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
