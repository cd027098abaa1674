"""Atomic, verified checkpoint files and the random-generator state they carry.

A checkpoint is written to a temporary file in the destination's directory, flushed,
``fsync``-ed and moved over the destination with ``os.replace``, so a crash at any point
leaves either the old or the new file, never a partial one. Each file carries a checksum
of its contents (the bytes of every tensor and the plain values), verified when it is
loaded: a truncated, corrupted or foreign file is refused with a :class:`CheckpointError`
naming it. Files are loaded with ``torch.load(..., weights_only=True)``: a file whose
unpickling would run code is refused, and nothing in it is executed. A trainer state
(``"format"`` key) must carry its checksum: one written or edited with plain ``torch.save``
is refused.

:func:`save_checkpoint` can keep the previous versions of a file (``last.pt`` ->
``last.prev.pt``, ``last.prev2.pt``, ...), and :func:`load_latest_checkpoint` falls back to
them when the newest one is unreadable.

Testing hook: when the environment variable ``TORCHVAT_TEST_CHECKPOINT_PAUSE`` is
``"NAME:STEP:PHASE:MARKER"``, the save to a file named ``NAME`` of a state whose ``"step"``
is ``STEP`` writes the file
``MARKER`` and then sleeps (an hour) at ``PHASE``: ``"written"`` (the temporary file is
complete, nothing renamed yet) or ``"rotated"`` (the previous version is kept, the new
file not yet moved in place). The fault-injection tests kill the process there.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import pickle
import random
import shutil
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import torch
from torch import nn

__all__ = [
    "CHECKSUM_KEY",
    "CheckpointError",
    "check_output_dir",
    "estimate_checkpoint_nbytes",
    "get_rng_state",
    "load_checkpoint",
    "load_latest_checkpoint",
    "previous_checkpoints",
    "remove_stale_temporaries",
    "save_checkpoint",
    "seed_everything",
    "select_device",
    "set_rng_state",
    "state_checksum",
]

#: Key of the checksum that :func:`save_checkpoint` adds to a dict state.
CHECKSUM_KEY = "checksum"
# the key that marks a Trainer.state_dict: load_checkpoint requires its checksum
_FORMAT_KEY = "format"
_PAUSE_ENV = "TORCHVAT_TEST_CHECKPOINT_PAUSE"


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupted, or refused as unsafe; the message names it."""


def select_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve a device name; ``"auto"`` picks CUDA, then MPS, then CPU.

    Args:
        device: ``"auto"``, a device string such as ``"cuda:1"``, or a ``torch.device``.

    Returns:
        The device.

    Raises:
        ValueError: If the string is not a valid device.

    Example:
        >>> select_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto' or a torch device string, got {device!r}") from err


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's (CPU and every accelerator's) generators.

    Args:
        seed: The seed (>= 0).

    Example:
        >>> seed_everything(3); a = torch.rand(1)
        >>> seed_everything(3); torch.equal(a, torch.rand(1))
        True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global generator is what users call
    torch.manual_seed(seed)


def get_rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Capture the global generators as tensors and plain containers.

    Args:
        device: The training device; its accelerator generator is included.

    Returns:
        A dict safe for ``torch.load(..., weights_only=True)``.
    """
    version, internal, gauss = random.getstate()
    # the legacy tuple form (legacy=True, the default), which NumPy's stubs type as ``tuple | dict``
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())  # noqa: NPY002
    kind, keys, pos, has_gauss, cached = legacy
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "device_type": "cpu" if device is None else device.type,
        "device": None,
    }
    if device is not None and device.type == "cuda":
        state["device"] = torch.cuda.get_rng_state(device)
    elif device is not None and device.type == "mps":
        state["device"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore generators captured by :func:`get_rng_state`.

    The accelerator generator is restored only when ``device`` has the saved type.

    Args:
        state: The captured state.
        device: The training device.
    """
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))  # noqa: NPY002
    saved = state.get("device")
    if saved is None or device is None or device.type != state.get("device_type"):
        return
    if device.type == "cuda":
        torch.cuda.set_rng_state(saved.cpu(), device)
    elif device.type == "mps":
        torch.mps.set_rng_state(saved.cpu())


def _update_digest(h: Any, value: Any) -> None:
    """Feed a state (tensors and plain containers) into a hash, in a fixed order."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.layout == torch.strided and t.numel() > 0:
            flat = t.cpu().contiguous().reshape(-1).view(torch.uint8)
            h.update(memoryview(flat.numpy()))  # type: ignore[arg-type]  # ndarray has the buffer protocol; stubs lack it
    elif isinstance(value, Mapping):
        h.update(f"D{len(value)}".encode())
        for key, item in value.items():
            _update_digest(h, key)
            _update_digest(h, item)
    elif isinstance(value, list | tuple):
        h.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}".encode())
        for item in value:
            _update_digest(h, item)
    else:
        h.update(f"V{type(value).__name__}:{value!r};".encode())


def state_checksum(state: Any) -> str:
    """A BLAKE2b digest of a state's tensors (dtype, shape, bytes) and plain values.

    Args:
        state: Tensors and plain containers.

    Returns:
        The hexadecimal digest.

    Example:
        >>> a = state_checksum({"w": torch.ones(2), "step": 1})
        >>> a == state_checksum({"w": torch.ones(2), "step": 1}), a == state_checksum({"w": torch.zeros(2), "step": 1})
        (True, False)
    """
    h = hashlib.blake2b(digest_size=32)
    _update_digest(h, state)
    return h.hexdigest()


def previous_checkpoints(path: str | os.PathLike[str], keep: int) -> list[Path]:
    """The files that hold the previous versions of ``path``, newest first.

    Args:
        path: The checkpoint file, e.g. ``run/last.pt``.
        keep: How many previous versions.

    Returns:
        ``[run/last.prev.pt, run/last.prev2.pt, ...]`` (``keep`` paths).

    Example:
        >>> [p.name for p in previous_checkpoints("run/last.pt", 3)]
        ['last.prev.pt', 'last.prev2.pt', 'last.prev3.pt']
    """
    p = Path(path)
    return [p.with_name(f"{p.stem}.prev{'' if n == 1 else n}{p.suffix}") for n in range(1, keep + 1)]


def _test_pause(state: Any, path: Path, phase: str) -> None:
    """The fault-injection hook of the tests (see the module docstring)."""
    spec = os.environ.get(_PAUSE_ENV)
    if not spec or not isinstance(state, Mapping):
        return
    name, step, want, marker = spec.split(":", 3)
    if want == phase and path.name == name and str(state.get("step")) == step:
        Path(marker).write_text(phase, encoding="utf-8")
        time.sleep(3600)


def _keep_previous(path: Path, keep: int) -> None:
    """Shift the previous versions of ``path`` by one and keep ``path`` as the newest.

    ``path`` itself is never moved: it is hard-linked (or copied) to a temporary name that
    is then renamed, so at every moment the current file and all kept versions exist.
    """
    if keep < 1 or not path.is_file():
        return
    olds = previous_checkpoints(path, keep)
    for newer, older in zip(reversed(olds[:-1]), reversed(olds[1:]), strict=True):
        if newer.is_file():
            os.replace(newer, older)
    fd, tmp = tempfile.mkstemp(prefix=f".{olds[0].name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(path, tmp)
        except OSError:  # no hard links on this file system: copy
            shutil.copyfile(path, tmp)
        os.replace(tmp, olds[0])
        # renaming a hard link over another link of the same file does nothing: drop it
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # make renames durable where the OS allows it
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str], *, keep_previous: int = 0) -> Path:
    """Write ``state`` to ``path`` atomically, with a checksum, optionally keeping older versions.

    The state is written to a temporary file in the same directory, flushed and
    ``fsync``-ed, then moved over ``path`` with ``os.replace``: a crash or an error
    mid-write leaves the previous file at ``path`` intact and no temporary file behind
    (a killed process may leave a hidden ``.NAME.*.tmp``, which
    :func:`remove_stale_temporaries` deletes). A dict state gets the key
    :data:`CHECKSUM_KEY` (the caller's dict is not changed), checked by
    :func:`load_checkpoint`.

    Args:
        state: Tensors and plain containers (loadable with ``weights_only=True``).
        path: Destination file; its directory is created if needed.
        keep_previous: How many previous versions of ``path`` to keep (``last.pt`` ->
            ``last.prev.pt``, ``last.prev2.pt``, ...); 0 keeps none.

    Returns:
        The destination path.

    Raises:
        OSError: If the file cannot be written (full disk, no permission); the message
            names the file, and the previous file at ``path`` is unchanged.
        ValueError: If ``keep_previous`` is not an integer >= 0.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> p = save_checkpoint({"w": torch.ones(2), "step": 3}, os.path.join(d, "c.pt"))
        >>> p = save_checkpoint({"w": torch.ones(2), "step": 4}, p, keep_previous=1)
        >>> load_checkpoint(p)["step"], load_checkpoint(os.path.join(d, "c.prev.pt"))["step"]
        (4, 3)
    """
    if isinstance(keep_previous, bool) or not isinstance(keep_previous, int) or keep_previous < 0:
        raise ValueError(f"keep_previous must be an integer >= 0, got {keep_previous!r}")
    path = Path(path)
    payload: Any = state
    if isinstance(state, Mapping):
        payload = {k: v for k, v in state.items() if k != CHECKSUM_KEY}
        payload[CHECKSUM_KEY] = state_checksum({k: v for k, v in payload.items() if k != CHECKSUM_KEY})

    def rotate() -> None:
        _test_pause(payload, path, "written")
        _keep_previous(path, keep_previous)
        _test_pause(payload, path, "rotated")

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _replace_atomically(path, lambda f: torch.save(payload, f), before_replace=rotate)
    except OSError as err:
        raise _write_error(err, path) from err
    _fsync_dir(path.parent)
    return path


def _default_mode(fd: int) -> None:
    """Give a ``mkstemp`` file (created 0600) the mode an ordinary new file gets: 0666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(OSError):  # a file system without modes
        os.fchmod(fd, 0o666 & ~umask)


def _replace_atomically(
    path: Path, write: Callable[[IO[bytes]], object], before_replace: Callable[[], None] | None = None
) -> Path:
    """Write a file through ``write`` into a temporary file beside ``path``, ``fsync`` it, move it over ``path``.

    ``before_replace`` runs once the new file is complete, just before it is moved in (the
    rotation of a checkpoint's previous versions). A crash or an error leaves the previous file
    at ``path`` as it was and no temporary file behind (a killed process may leave a hidden
    ``.NAME.*.tmp``: :func:`remove_stale_temporaries`).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    _default_mode(fd)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write a small text file (a run's config, its description) so that it is whole or unchanged.

    The text goes to a temporary file in the same directory, is ``fsync``-ed and moved over
    ``path`` with ``os.replace``; a crash or an error leaves the previous file as it was.

    Args:
        path: The file.
        text: Its new content (UTF-8).

    Returns:
        The path.

    Raises:
        OSError: If the directory is not writable (the previous file is unchanged).
    """
    return _replace_atomically(Path(path), lambda f: f.write(text.encode("utf-8")))


def copy_file_atomic(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Copy ``src`` to ``dst`` so that ``dst`` is whole or unchanged, as :func:`write_text_atomic` writes.

    Args:
        src: The file to copy.
        dst: The destination file (its folder must exist).

    Returns:
        The destination path.

    Raises:
        OSError: If ``src`` cannot be read or ``dst``'s folder is not writable (``dst`` is unchanged).
    """
    with open(src, "rb") as source:
        return _replace_atomically(Path(dst), lambda f: shutil.copyfileobj(source, f))


def _write_error(err: OSError, path: Path) -> OSError:
    reason = err.strerror or str(err)
    new = type(err)(f"cannot write checkpoint {str(path)!r}: {reason}; the previous file there (if any) is unchanged")
    new.errno = err.errno
    return new


def _describe_load_error(path: Path, err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    unsafe = ("Unsupported global", "allowed global", "Can only build", "add_safe_globals", "Unsupported class")
    reasons = [line for line in lines if any(marker in line for marker in unsafe)]
    if isinstance(err, pickle.UnpicklingError) and reasons:
        return (
            f"checkpoint {str(path)!r} was refused: loading it would run code or build objects other than "
            f"tensors and plain containers ({reasons[0].split(' Please use')[0][:200]}); "
            "torchvat loads checkpoints with torch.load(weights_only=True) only"
        )
    if path.is_file() and not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        size = path.stat().st_size
        what = "empty" if size == 0 else f"{size} bytes, not the zip archive torch.save writes"
        return (
            f"checkpoint {str(path)!r} is unreadable: the file is {what} "
            "(a copy or a download cut short, or another kind of file)"
        )
    # torch's weights-only errors start with generic lines (one asks to file an issue with torch);
    # the specific reason follows them
    generic = ("Weights only load failed", "Please file an issue", "In PyTorch 2.6", "Check the documentation")
    specific = [line for line in lines if not line.startswith(generic)]
    detail = specific[0] if specific else (lines[0] if lines else type(err).__name__)
    detail = detail.split("Please file an issue")[0].rstrip(" :")
    return (
        f"checkpoint {str(path)!r} is unreadable (truncated, corrupted or not a torch checkpoint): "
        f"{type(err).__name__}: {detail[:400]}"
    )


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(..., weights_only=True)`` and verify its checksum.

    Args:
        path: The file.
        map_location: Where tensors are loaded (default CPU).

    A dict state with a checksum (:func:`save_checkpoint` adds one) must match it. A trainer
    state (:meth:`Trainer.state_dict`, marked by its ``"format"`` key) must have one: without
    it the file was written or edited with plain ``torch.save`` and is refused. Other states
    without a checksum (a plain ``torch.save`` of a model's weights) load unverified.

    Returns:
        The saved state (without the checksum key).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        CheckpointError: If the file is truncated or corrupted, is not a checkpoint, fails
            its checksum, is a trainer state without a checksum, or would need code
            execution to load (a malicious or foreign pickle); the message names the file.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "bad.pt")
        >>> _ = Path(p).write_bytes(b"not a checkpoint")
        >>> load_checkpoint(p)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        torchvat.train.checkpoint.CheckpointError: checkpoint '...bad.pt' is unreadable: the file is 16 bytes, ...
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(_describe_load_error(path, err)) from err
    if isinstance(state, dict) and CHECKSUM_KEY in state:
        saved = state.pop(CHECKSUM_KEY)
        if saved != state_checksum(state):
            raise CheckpointError(
                f"checkpoint {str(path)!r} is corrupted: its contents do not match the checksum written with it"
            )
    elif isinstance(state, dict) and _FORMAT_KEY in state:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is a trainer state without a checksum: save_checkpoint (and so the "
            "Checkpoint callback and torchvat train) always writes one, so this file was written, or edited and "
            "saved again, with plain torch.save and cannot be verified; if you trust its contents, re-save it with "
            "torchvat.train.save_checkpoint(torch.load(path, weights_only=True), path), which adds the checksum"
        )
    return state


def load_latest_checkpoint(
    path: str | os.PathLike[str],
    *,
    keep: int = 9,
    map_location: str | torch.device | None = "cpu",
) -> tuple[Path, dict[str, Any]]:
    """Load ``path``, or when it is missing or unreadable the newest good previous version.

    The candidates are ``path`` then :func:`previous_checkpoints` (``last.prev.pt``, ...).
    Each one skipped is reported with a warning that names the file and the reason.

    Args:
        path: The newest checkpoint, e.g. ``run/last.pt``.
        keep: How many previous versions to look for.
        map_location: Where tensors are loaded.

    Returns:
        The file actually loaded and its state.

    Raises:
        FileNotFoundError: If neither ``path`` nor a previous version exists.
        CheckpointError: If every candidate that exists is unreadable (each is named).

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> p = save_checkpoint({"step": 1}, os.path.join(d, "last.pt"))
        >>> p = save_checkpoint({"step": 2}, p, keep_previous=1)
        >>> _ = Path(p).write_bytes(b"garbage")  # the newest file is damaged
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     used, state = load_latest_checkpoint(p)
        >>> used.name, state["step"]
        ('last.prev.pt', 1)
    """
    path = Path(path)
    problems: list[str] = []
    for candidate in [path, *previous_checkpoints(path, keep)]:
        if not candidate.is_file():
            if candidate == path:
                problems.append(f"no checkpoint at {str(candidate)!r}")
            continue
        try:
            state = load_checkpoint(candidate, map_location=map_location)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        if problems:
            message = f"{'; '.join(problems)}; using the previous checkpoint {str(candidate)!r} instead"
            warnings.warn(message, UserWarning, stacklevel=2)
        return candidate, state
    if len(problems) == 1 and problems[0].startswith("no checkpoint"):
        raise FileNotFoundError(f"no checkpoint at {str(path)!r} nor a previous version of it")
    raise CheckpointError("no usable checkpoint: " + "; ".join(problems))


def remove_stale_temporaries(
    directory: str | os.PathLike[str], names: tuple[str, ...] = ("last.pt", "best.pt")
) -> list[Path]:
    """Delete the temporary files a killed :func:`save_checkpoint` may have left.

    Only hidden files ``.NAME.*.tmp`` of the given checkpoint names (and of their previous
    versions) are removed.

    Args:
        directory: The checkpoint directory.
        names: The checkpoint file names written there.

    Returns:
        The files removed.
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    removed = []
    for name in names:
        stem, suffix = Path(name).stem, Path(name).suffix
        for pattern in (f".{name}.*.tmp", f".{stem}.prev*{suffix}.*.tmp"):
            for tmp in d.glob(pattern):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                    removed.append(tmp)
    return removed


def estimate_checkpoint_nbytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """An estimate of a trainer checkpoint's size: model state and optimizer state.

    Before the optimizer's first step its state is empty; it is then counted as two
    copies of the parameters (Adam's moments).

    Args:
        model: The model.
        optimizer: Its optimizer.

    Returns:
        Bytes (with 1 MiB for the rest of the state).

    Example:
        >>> estimate_checkpoint_nbytes(nn.Linear(1000, 1000)) > 3 * 4 * 1000 * 1000
        True
    """
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    opt_bytes = 0
    if optimizer is not None:
        for s in optimizer.state.values():
            opt_bytes += sum(v.numel() * v.element_size() for v in s.values() if isinstance(v, torch.Tensor))
    if opt_bytes == 0:
        opt_bytes = 2 * sum(p.numel() * p.element_size() for p in model.parameters())
    return model_bytes + opt_bytes + 2**20


def check_output_dir(directory: str | os.PathLike[str], need_bytes: int = 0) -> Path:
    """Check, before training, that files can be written in ``directory``.

    The directory is created if needed, a probe file is written, synced and deleted, and
    the free space is compared with ``need_bytes``.

    Args:
        directory: The output directory.
        need_bytes: Free space needed (e.g. twice :func:`estimate_checkpoint_nbytes`).

    Returns:
        The directory.

    Raises:
        NotADirectoryError: If the path exists and is not a directory.
        OSError: If it cannot be created or written to (``PermissionError`` for a
            permission problem), or has less free space than ``need_bytes``; the message
            names the directory.

    Example:
        >>> import tempfile
        >>> check_output_dir(tempfile.mkdtemp(), need_bytes=1).is_dir()
        True
    """
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise NotADirectoryError(f"output directory {str(d)!r} exists and is not a directory")
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".torchvat-write-test.", suffix=".tmp", dir=d)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"torchvat")
                f.flush()
                os.fsync(f.fileno())
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(probe)
    except OSError as err:
        new = type(err)(f"output directory {str(d)!r} is not writable: {err.strerror or err}")
        new.errno = err.errno
        raise new from err
    free = shutil.disk_usage(d).free
    if need_bytes > free:
        new = OSError(
            f"not enough free space in output directory {str(d)!r}: the checkpoints need about "
            f"{need_bytes / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free"
        )
        new.errno = errno.ENOSPC
        raise new
    return d
