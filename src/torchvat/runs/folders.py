"""Run folders: what makes a folder a run, when a new run may write there, and staging."""

from __future__ import annotations

import collections.abc
import contextlib
import datetime as _dt
import os
import re
import shutil
from pathlib import Path
from typing import Any

from torchvat.runs.errors import UsageError
from torchvat.train import Callback, Trainer, is_main_process
from torchvat.train.checkpoint import (
    check_output_dir,
)

__all__ = [
    "CONFIG_FILE",
    "RUN_FILE",
    "RUN_FILES",
    "STAGING_DIR",
    "check_report_folder",
    "check_run_folder",
    "find_checkpoint",
    "holds_checkpoint",
    "new_run_dir",
    "output_folder",
    "remove_empty_tree",
    "run_files",
    "staged_output",
]


RUN_FILE = "run.json"
CONFIG_FILE = "config.toml"
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


def branches(resume: str | os.PathLike[str] | None, directory: str | os.PathLike[str]) -> bool:
    """Whether a run resumed from checkpoint ``resume`` into ``directory`` branches into a new folder.

    It does when ``directory`` is not the checkpoint's own folder (a path that cannot be resolved
    counts as another folder); a run that is not resumed does not branch.

    Args:
        resume: The checkpoint the run continues from, or ``None``.
        directory: The run's folder.

    Returns:
        Whether it branches.

    Example:
        >>> branches("A/last.pt", "A"), branches("A/last.pt", "B"), branches(None, "B")
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
        branched = branches(resume, d)
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


#: the folder, inside a run's or report's folder, where a new run is built until it has a checkpoint
STAGING_DIR = ".torchvat-staging"


def new_staging(out: Path) -> Path:
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
    staging = new_staging(Path(out))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if is_main_process():
        _commit_staged(staging, Path(out))


class SwapInAtFirstCheckpoint(Callback):
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
