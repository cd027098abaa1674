"""Callbacks: progress bar, metrics file, checkpoints and TensorBoard as replaceable hooks.

The trainer calls, in this order::

    on_train_begin
    for each iteration:
        on_step_begin
        (training step)
        on_eval_end          # only on evaluation iterations, after the evaluation
        on_step_end          # the iteration is complete: its metrics and evaluation are in
    on_train_end

    on_exception             # instead, when an exception escapes from the loop, a hook or
                             # on_train_end (then raised again); a NonFiniteLossError of an
                             # iteration is not one: on_train_end runs for it

``on_exception`` releases what a callback holds (the built-in ones close the metrics file,
the TensorBoard writer and the progress bar) and writes nothing: the state may be torn in
the middle of an iteration, so the checkpoints on disk stay those of the last checkpoint
iteration.

Every hook receives the trainer as ``trainer=`` and further keyword arguments; a callback
overrides the hooks it needs and accepts ``**kwargs`` so new arguments never break it.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import IO, Any

import torch.distributed as dist

from torchvat._extras import require
from torchvat.train.checkpoint import (
    check_output_dir,
    estimate_checkpoint_nbytes,
    remove_stale_temporaries,
    save_checkpoint,
    write_text_atomic,
)
from torchvat.train.distributed import broadcast_object

#: the trainer a hook receives (``kwargs["trainer"]``): a :class:`~torchvat.train.Trainer`, named
#: loosely here because the trainer imports this module (no import circle, even for type checking)
TrainerLike = Any

__all__ = [
    "Callback",
    "Checkpoint",
    "JSONLogger",
    "ProgressBar",
    "TensorBoardLogger",
    "is_main_process",
]


def is_main_process() -> bool:
    """Whether this process should write files (rank 0, or not distributed).

    Example:
        >>> is_main_process()
        True
    """
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class Callback:
    """Base class of callbacks: every hook does nothing.

    Example:
        >>> class CountSteps(Callback):
        ...     def __init__(self):
        ...         self.n = 0
        ...     def on_step_end(self, **kwargs):
        ...         self.n += 1
        >>> CountSteps().on_train_begin(trainer=None)  # unused hooks are no-ops
    """

    def on_train_begin(self, **kwargs: Any) -> None:
        """Called once when :meth:`Trainer.fit` starts (``trainer``)."""

    def on_step_begin(self, **kwargs: Any) -> None:
        """Called before each iteration (``trainer``, ``step``: iterations done so far)."""

    def on_eval_end(self, **kwargs: Any) -> None:
        """Called after an evaluation (``trainer``, ``step``, ``metrics``, ``improved``)."""

    def on_step_end(self, **kwargs: Any) -> None:
        """Called when an iteration is complete.

        Keyword arguments: ``trainer``, ``step`` (iterations done), ``metrics`` (this
        iteration's loss terms as device tensors: no synchronization), ``logs`` (means since
        the last log as floats on logging iterations, else ``None``), ``evaluated``.
        """

    def on_train_end(self, **kwargs: Any) -> None:
        """Called once when training ends (``trainer``, ``result``)."""

    def on_exception(self, **kwargs: Any) -> None:
        """Called instead of (or after a failed) ``on_train_end`` when :meth:`Trainer.fit` fails.

        Keyword arguments: ``trainer``, ``exception`` (what escaped, ``KeyboardInterrupt``
        included; not the :class:`~torchvat.train.NonFiniteLossError` of an iteration, for
        which ``on_train_end`` runs), raised again after every callback's ``on_exception``.
        It may come at any point after ``on_train_begin`` started, also before this
        callback's own ``on_train_begin`` ran or after its ``on_train_end`` did, and in the
        middle of an iteration: close files and release resources here, idempotently, and
        write no state. An exception raised here is logged and the other callbacks'
        ``on_exception`` still run.
        """


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


class ProgressBar(Callback):
    """A tqdm bar with the live loss, labeled-batch accuracy and last held-out error.

    The bar is shown only on rank 0 and only when ``enabled`` and standard error is a
    terminal (``force=True`` skips the terminal check).

    Args:
        enabled: Whether to show the bar at all.
        force: Show it even when standard error is not a terminal.
    """

    def __init__(self, enabled: bool = True, force: bool = False) -> None:
        self.enabled = enabled
        self.force = force
        self.bar: Any = None
        self._postfix: dict[str, str] = {}

    def on_train_begin(self, **kwargs: Any) -> None:
        """Open the bar at the trainer's current iteration."""
        trainer: TrainerLike = kwargs["trainer"]
        show = self.enabled and is_main_process() and (self.force or sys.stderr.isatty())
        if not show:
            self.bar = None
            return
        tqdm = require("tqdm.auto", extra="cli", feature="the trainer's progress bar").tqdm
        self.bar = tqdm(
            total=trainer.config.iterations,
            initial=trainer.step,
            desc=trainer.method.name,
            dynamic_ncols=True,
        )

    def on_eval_end(self, **kwargs: Any) -> None:
        """Show the held-out error."""
        for key in ("val_error", "test_error"):
            if key in kwargs["metrics"]:
                self._postfix[key.split("_")[0] + "_err"] = _fmt(kwargs["metrics"][key])
                break

    def on_step_end(self, **kwargs: Any) -> None:
        """Advance the bar; refresh its numbers on logging iterations."""
        if self.bar is None:
            return
        logs = kwargs.get("logs")
        if logs:
            self._postfix["loss"] = _fmt(logs["loss"])
            if "acc" in logs:
                self._postfix["acc"] = _fmt(logs["acc"])
            self.bar.set_postfix(self._postfix, refresh=False)
        self.bar.update(1)

    def on_train_end(self, **kwargs: Any) -> None:
        """Close the bar."""
        self._close()

    def on_exception(self, **kwargs: Any) -> None:
        """Close the bar."""
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _drop_lines_after(path: Path, step: int) -> None:
    """Rewrite a metrics file without its torn lines and the lines of iterations after ``step``.

    The file is replaced atomically, and only if something is dropped.
    """
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not line.endswith("\n") or not isinstance(record, dict) or record.get("step", 0) > step:
            continue
        keep.append(line)
    if len(keep) != len(lines):
        write_text_atomic(path, "".join(keep))


class JSONLogger(Callback):
    """Append one JSON object per line to ``metrics.jsonl``.

    Training lines (``"kind": "train"``) carry the means of the loss terms since the last
    log; evaluation lines (``"kind": "eval"``) the held-out metrics. Written on rank 0 only.
    A run that starts at iteration 0 starts the file afresh (an earlier run's file in the
    same folder is replaced atomically by an empty one, as ``torchvat train`` rewrites
    ``config.toml`` and ``run.json``); a resumed run continues it: lines past the resumed
    iteration (written after the checkpoint by a run that was then killed) and a torn last
    line are dropped first, so the file ends as that of an uninterrupted run.

    Args:
        path: The file; ``None`` means ``<out_dir>/metrics.jsonl`` of the trainer.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._file: IO[str] | None = None

    def on_train_begin(self, **kwargs: Any) -> None:
        """Open the file for appending (emptied first at iteration 0)."""
        trainer: TrainerLike = kwargs["trainer"]
        if not is_main_process():
            return
        path = self.path
        if path is None:
            if trainer.config.out_dir is None:
                raise ValueError("JSONLogger needs a path or a trainer with config.out_dir set, got neither")
            path = Path(trainer.config.out_dir) / "metrics.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            if trainer.step > 0:  # resumed
                _drop_lines_after(path, trainer.step)
            elif path.stat().st_size > 0:  # a new run: not another run's lines
                write_text_atomic(path, "")
        self._file = path.open("a", encoding="utf-8")
        trainer.paths["metrics"] = str(path)

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def on_step_end(self, **kwargs: Any) -> None:
        """Write a training line on logging iterations."""
        if kwargs.get("logs"):
            self._write({"kind": "train", "step": kwargs["step"], **kwargs["logs"]})

    def on_eval_end(self, **kwargs: Any) -> None:
        """Write an evaluation line."""
        self._write({"kind": "eval", **kwargs["metrics"]})

    def on_train_end(self, **kwargs: Any) -> None:
        """Close the file."""
        self._close()

    def on_exception(self, **kwargs: Any) -> None:
        """Close the file (every line written so far is flushed already)."""
        self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Checkpoint(Callback):
    """Write ``last.pt`` periodically and ``best.pt`` when the held-out error improves.

    Files hold :meth:`Trainer.state_dict` and are written atomically on rank 0 (see
    :func:`~torchvat.train.save_checkpoint`), each with a checksum; the previous
    ``last.pt`` is kept as ``last.prev.pt`` (and older ones as ``last.prev2.pt``, ... with
    ``keep_previous > 1``), so a damaged newest file never loses the run: resume with
    ``Trainer.fit(resume=path)`` or :func:`~torchvat.train.checkpoint.load_latest_checkpoint`,
    which falls back to the previous versions.

    In a distributed run every process runs this callback (the trainer's built-in one does; add
    your own on every process, not on rank 0 only): each checkpoint gathers every process's own
    random state to rank 0 (:meth:`Trainer.gather_state_dict`, a collective operation), which
    writes the one file.

    When training starts the directory is checked (created, writable, free space for
    about two checkpoints; see :func:`~torchvat.train.checkpoint.check_output_dir`), and
    temporary files left by a killed run are deleted. When :meth:`Trainer.fit` fails with an
    exception (:meth:`Callback.on_exception`) nothing is written: the files stay those of the
    last checkpoint iteration. A :meth:`Trainer.fit` that trains no iteration (the run is
    complete already) does not write ``last.pt`` again when it exists.

    Args:
        directory: Where to write; ``None`` means the trainer's ``config.out_dir``.
        every: Write ``last.pt`` every this many iterations; ``None`` means
            ``config.checkpoint_every``, or at every evaluation if that is ``None`` too.
            ``last.pt`` is also written when training ends.
        save_best: Whether to write ``best.pt``.
        keep_previous: How many previous versions of ``last.pt`` to keep (0: none).

    Raises:
        ValueError: If ``every`` or ``keep_previous`` is invalid.

    Example:
        >>> Checkpoint(every=100, keep_previous=2).keep_previous
        2
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        every: int | None = None,
        save_best: bool = True,
        keep_previous: int = 1,
    ) -> None:
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"every must be a positive integer or None, got {every!r}")
        if isinstance(keep_previous, bool) or not isinstance(keep_previous, int) or keep_previous < 0:
            raise ValueError(f"keep_previous must be an integer >= 0, got {keep_previous!r}")
        self.directory = None if directory is None else Path(directory)
        self.every = every
        self.save_best = save_best
        self.keep_previous = keep_previous
        self._last_step: int | None = None  # the step of the last.pt written by this run
        self._trained = False  # an iteration started since on_train_begin

    def _dir(self, trainer: TrainerLike) -> Path:
        if self.directory is not None:
            return self.directory
        if trainer.config.out_dir is None:
            raise ValueError("Checkpoint needs a directory or config.out_dir, got neither")
        return Path(trainer.config.out_dir)

    def _save(self, trainer: TrainerLike, name: str) -> None:
        # every process reads its non-finite record here, not only the one that writes: in a
        # distributed run they then stop (or skip) on the same iteration (their records agree,
        # the gradients being all-reduced), instead of rank 0 leaving the others in a collective
        trainer.check_nonfinite()
        # every process's own random state, gathered to rank 0: one file resumes each of them exactly
        gather = getattr(trainer, "gather_state_dict", None)
        state = gather() if gather is not None else trainer.state_dict() if is_main_process() else None
        if state is not None:  # rank 0
            keep = self.keep_previous if name == "last.pt" else 0
            path = save_checkpoint(state, self._dir(trainer) / name, keep_previous=keep)
            trainer.paths[name.removesuffix(".pt")] = str(path)
        if name == "last.pt":
            self._last_step = trainer.step

    def on_train_begin(self, **kwargs: Any) -> None:
        """Check the directory (writable, free space) and delete stale temporary files."""
        trainer: TrainerLike = kwargs["trainer"]
        self._trained = False
        if not is_main_process():
            return
        directory = self._dir(trainer)
        check_output_dir(directory, 2 * estimate_checkpoint_nbytes(trainer.model, trainer.optimizer))
        remove_stale_temporaries(directory)

    def on_step_begin(self, **kwargs: Any) -> None:
        """Note that this :meth:`Trainer.fit` trains (``on_train_end`` then writes ``last.pt``)."""
        self._trained = True

    def on_eval_end(self, **kwargs: Any) -> None:
        """Write ``best.pt`` when the monitored error improved."""
        if self.save_best and kwargs.get("improved"):
            self._save(kwargs["trainer"], "best.pt")

    def on_step_end(self, **kwargs: Any) -> None:
        """Write ``last.pt`` on checkpoint iterations."""
        trainer: TrainerLike = kwargs["trainer"]
        step = kwargs["step"]
        every = self.every or trainer.config.checkpoint_every
        due = step % every == 0 if every is not None else kwargs.get("evaluated", False)
        if due and step < trainer.config.iterations:
            self._save(trainer, "last.pt")

    def on_train_end(self, **kwargs: Any) -> None:
        """Write ``last.pt`` with the final state (also after an early stop or an interruption).

        Not again when the run ended on the iteration whose ``last.pt`` was just written, nor
        when no iteration ran since ``on_train_begin`` (a complete run resumed, or a second
        :meth:`Trainer.fit`) and ``last.pt`` exists: a second write would rotate that same state
        into ``last.prev.pt`` and lose the older one.
        """
        trainer: TrainerLike = kwargs["trainer"]
        existing = self._dir(trainer) / "last.pt"
        # rank 0's answer on every process (another node may not see the folder): they save together
        if not self._trained and broadcast_object(existing.is_file() if is_main_process() else None):
            if is_main_process():
                trainer.paths["last"] = str(existing)
            return
        if self._last_step != trainer.step:
            self._save(trainer, "last.pt")


class TensorBoardLogger(Callback):
    """Log training and evaluation scalars to TensorBoard (needs ``torchvat[tensorboard]``).

    Args:
        log_dir: Event directory; ``None`` means ``<out_dir>/tensorboard`` (or ``runs``).
    """

    def __init__(self, log_dir: str | Path | None = None) -> None:
        self.log_dir = log_dir
        self.writer: Any = None

    def on_train_begin(self, **kwargs: Any) -> None:
        """Open a ``SummaryWriter`` (TensorBoard is imported here only)."""
        trainer: TrainerLike = kwargs["trainer"]
        if not is_main_process():
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError(
                "TensorBoardLogger needs the tensorboard package: pip install 'torchvat[tensorboard]'"
            ) from err
        log_dir = self.log_dir
        if log_dir is None:
            out = trainer.config.out_dir
            log_dir = str(Path(out) / "tensorboard") if out is not None else "runs"
        self.writer = SummaryWriter(log_dir=str(log_dir))
        trainer.paths["tensorboard"] = str(log_dir)

    def on_step_end(self, **kwargs: Any) -> None:
        """Log the training means on logging iterations."""
        if self.writer is not None and kwargs.get("logs"):
            for key, value in kwargs["logs"].items():
                self.writer.add_scalar(f"train/{key}", value, kwargs["step"])

    def on_eval_end(self, **kwargs: Any) -> None:
        """Log the evaluation metrics."""
        if self.writer is None:
            return
        for key, value in kwargs["metrics"].items():
            if key != "step" and isinstance(value, int | float):
                self.writer.add_scalar(f"eval/{key}", value, kwargs["step"])

    def on_train_end(self, **kwargs: Any) -> None:
        """Flush and close the writer."""
        self._close()

    def on_exception(self, **kwargs: Any) -> None:
        """Flush and close the writer."""
        self._close()

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
