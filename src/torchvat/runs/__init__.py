"""A run folder as a Python API: run configuration, building data and model, ``train_run`` / ``load_run``.

What the ``torchvat`` command does, without its argument parsing: the command line parses its
flags into a :class:`RunConfig` and calls these functions.

A run configuration has three sections, as in a ``config.toml`` file::

    [data]   dataset name or path, labels, seed, preprocessing, augmentation, loader options
    [model]  name and keyword arguments
    [train]  TrainConfig fields

Every training run writes into its folder ``config.toml`` (the resolved configuration:
``torchvat train --config DIR/config.toml`` repeats it), ``run.json`` (what :func:`load_run`
needs to rebuild the model and the data: the trainer's checkpoint holds the training state but
not the model's constructor arguments nor the dataset), the trainer's ``metrics.jsonl`` and
checkpoints ``last.pt`` / ``best.pt``. A folder holding a checkpoint is a run: a new run there is
refused unless it continues it (``resume``) or replaces it (``overwrite``), and a replacing run
is built in a staging folder and moved in only at its first checkpoint.

The modules, each with one job: :mod:`~torchvat.runs.config` (the sections and TOML),
:mod:`~torchvat.runs.build` (data, augmentation and model from the sections),
:mod:`~torchvat.runs.devices`, :mod:`~torchvat.runs.folders` (run folders and staging),
:mod:`~torchvat.runs.train` (:func:`train_run`) and :mod:`~torchvat.runs.load` (:func:`load_run`).

Example:
    >>> import tempfile
    >>> from torchvat.runs import DataSpec, RunConfig, load_run, train_run
    >>> from torchvat.train import TrainConfig
    >>> config = RunConfig(
    ...     data=DataSpec(dataset="moons", n_labels=10, options={"n_samples": 200}),
    ...     train=TrainConfig(iterations=20, eval_every=10, log_every=10, device="cpu"),
    ... )
    >>> out = tempfile.mkdtemp()
    >>> outcome = train_run(config, out, progress=False)
    >>> outcome.trainer.step, outcome.config.model.name
    (20, 'small-mlp')
    >>> model, data, info = load_run(out)
    >>> info["step"], info["n_classes"]
    (20, 2)
"""

from torchvat.runs._toml import dump_toml
from torchvat.runs.build import (
    build_augment,
    build_run_model,
    check_labeled_classes,
    describe_rows,
    load_run_data,
    load_run_data_and_transform,
)
from torchvat.runs.config import AUGMENT, PREPROCESS, DataSpec, ModelSpec, RunConfig
from torchvat.runs.devices import available_devices, check_device
from torchvat.runs.errors import DataNotFoundError, UsageError
from torchvat.runs.folders import (
    CONFIG_FILE,
    RUN_FILE,
    check_report_folder,
    check_run_folder,
    find_checkpoint,
    holds_checkpoint,
    new_run_dir,
    output_folder,
    remove_empty_tree,
    run_files,
    staged_output,
)
from torchvat.runs.load import load_run
from torchvat.runs.train import RunOutcome, train_run

__all__ = [
    "AUGMENT",
    "CONFIG_FILE",
    "PREPROCESS",
    "RUN_FILE",
    "DataNotFoundError",
    "DataSpec",
    "ModelSpec",
    "RunConfig",
    "RunOutcome",
    "UsageError",
    "available_devices",
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
    "load_run_data_and_transform",
    "new_run_dir",
    "output_folder",
    "remove_empty_tree",
    "run_files",
    "staged_output",
    "train_run",
]
