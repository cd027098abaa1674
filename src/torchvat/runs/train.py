"""``train_run``: one training run written into its run folder."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torchvat
from torchvat.data import SemiSupervisedData
from torchvat.runs.build import build_augment, build_run_model, check_labeled_classes, load_run_data
from torchvat.runs.config import ModelSpec, RunConfig
from torchvat.runs.devices import check_device
from torchvat.runs.errors import UsageError
from torchvat.runs.folders import (
    CONFIG_FILE,
    RUN_FILE,
    SwapInAtFirstCheckpoint,
    branches,
    check_run_folder,
    new_staging,
    output_folder,
)
from torchvat.train import Trainer, TrainResult, is_main_process, seed_everything
from torchvat.train.checkpoint import (
    CheckpointError,
    copy_file_atomic,
    load_checkpoint,
    write_text_atomic,
)
from torchvat.train.distributed import broadcast_object, rank, rank_seed
from torchvat.train.optim import EXTEND_MODES, planned_rate

__all__ = ["RunOutcome", "train_run"]


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
        lr_decay=float(saved_config.get("lr_decay", cfg.lr_decay)),
        lr_decay_every=saved_config.get("lr_decay_every", cfg.lr_decay_every),
        cosine_fraction=saved_config.get("cosine_fraction", cfg.cosine_fraction),
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
    if extend not in EXTEND_MODES:
        raise UsageError(f"extend (--extend) must be one of {', '.join(EXTEND_MODES)}, got {extend!r}")
    check_device(config.train.device)
    branched = branches(resume, out_dir)  # resumed from another folder's checkpoint
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
        staging = new_staging(out) if staged else None
        swap = SwapInAtFirstCheckpoint(staging, out) if staging is not None else None
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
