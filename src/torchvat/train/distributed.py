"""Data-parallel training helpers: process group, device, DDP wrapping, sharded batches.

The trainer uses these when the process is part of a ``torch.distributed`` job of more than
one process, started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``) or by a program that initialized the default process
group itself. Nothing here launches processes or does a rendezvous of its own: that is
``torchrun``'s job. See ``docs/distributed.md`` for the design and the commands.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from torchvat.data.sampler import InfiniteBatchSampler
from torchvat.train.defaults import DEFAULT_DIST_TIMEOUT

__all__ = [
    "Heartbeat",
    "PeerFailureError",
    "ShardedBatchSampler",
    "all_reduce_mean",
    "any_process",
    "broadcast_buffers",
    "broadcast_object",
    "destroy_distributed",
    "gather_to_main",
    "init_distributed",
    "is_distributed",
    "launched_by_torchrun",
    "local_rank",
    "peer_failure",
    "planned_world",
    "rank",
    "rank_seed",
    "resolve_device",
    "world_size",
    "wrap_model",
]

logger = logging.getLogger(__name__)

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 when not distributed).

    Example:
        >>> rank()
        0
    """
    return dist.get_rank() if _initialized() else 0


def world_size() -> int:
    """Number of processes of the job (1 when not distributed).

    Example:
        >>> world_size()
        1
    """
    return dist.get_world_size() if _initialized() else 1


def local_rank() -> int:
    """This process's rank on its node: ``LOCAL_RANK`` from ``torchrun``, else 0.

    Example:
        >>> import os
        >>> local_rank() == int(os.environ.get("LOCAL_RANK", 0))
        True
    """
    value = os.environ.get("LOCAL_RANK", "0")
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"LOCAL_RANK must be an integer, got {value!r}") from err


def is_distributed() -> bool:
    """Whether the default process group is initialized with more than one process.

    Example:
        >>> is_distributed()
        False
    """
    return _initialized() and dist.get_world_size() > 1


def launched_by_torchrun() -> bool:
    """Whether the environment names this process's place in a job (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    Example:
        >>> import os
        >>> launched_by_torchrun() == all(v in os.environ for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        True
    """
    return all(name in os.environ for name in _TORCHRUN_VARS)


def planned_world() -> tuple[int, int]:
    """The number of processes of the job and this process's rank, without initializing anything.

    From the default process group when it is initialized; else from ``torchrun``'s
    environment (``WORLD_SIZE``, ``RANK``), which :func:`init_distributed` will turn into a
    group; else ``(1, 0)``. A trainer reads it at construction and starts the group only in
    :meth:`~torchvat.train.Trainer.setup`.

    Returns:
        ``(world_size, rank)``.

    Raises:
        ValueError: If ``WORLD_SIZE`` or ``RANK`` is not an integer, or the rank is not in
            ``[0, WORLD_SIZE)``.

    Example:
        >>> import os
        >>> planned_world() == ((int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])) if launched_by_torchrun()
        ...                     else (1, 0))
        True
    """
    if _initialized():
        return dist.get_world_size(), dist.get_rank()
    if not dist.is_available() or not launched_by_torchrun():
        return 1, 0
    values = {}
    for name in ("WORLD_SIZE", "RANK"):
        text = os.environ[name]
        try:
            values[name] = int(text)
        except ValueError as err:
            raise ValueError(f"{name} must be an integer, got {text!r}") from err
    size, rank = values["WORLD_SIZE"], values["RANK"]
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE) with WORLD_SIZE >= 1, got RANK={rank}, WORLD_SIZE={size}")
    return size, rank


def resolve_device(device: torch.device) -> torch.device:
    """The device of this process: a CUDA device without an index becomes ``cuda:LOCAL_RANK``.

    Outside a ``torchrun`` job (or with an explicit index, or on another device type) the
    device is returned unchanged.

    Args:
        device: The configured device (already resolved from ``"auto"``).

    Returns:
        The device to train on.

    Example:
        >>> resolve_device(torch.device("cpu"))
        device(type='cpu')
    """
    if device.type == "cuda" and device.index is None and (launched_by_torchrun() or is_distributed()):
        return torch.device("cuda", local_rank())
    return device


def init_distributed(device: torch.device | str = "cpu", timeout: float | None = None) -> bool:
    """Initialize the default process group when ``torchrun`` started this process.

    Nothing is done when the group is already initialized (by the caller or an earlier call)
    or when the environment does not come from ``torchrun``. The backend is ``nccl`` for a
    CUDA device and ``gloo`` otherwise; for CUDA the current device is set to
    ``cuda:LOCAL_RANK`` first. A :class:`Heartbeat` is started (see :func:`peer_failure`).

    Args:
        device: The device this process will train on (``"auto"`` picks CUDA if available).
        timeout: Seconds a collective operation waits for the other processes before it fails
            (``None``: :data:`~torchvat.train.defaults.DEFAULT_DIST_TIMEOUT`).

    Returns:
        Whether this call initialized the group (and so should destroy it at the end, see
        :func:`destroy_distributed`).

    Example:
        >>> init_distributed("cpu")  # not started by torchrun: nothing to do
        False
    """
    if not dist.is_available() or _initialized() or not launched_by_torchrun():
        return False
    if isinstance(device, str):
        from torchvat.train.checkpoint import select_device

        device = select_device(device)
    device = resolve_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    seconds = DEFAULT_DIST_TIMEOUT if timeout is None else float(timeout)
    delta = datetime.timedelta(seconds=seconds)
    store = _attempt_store(delta)
    if store is None:
        dist.init_process_group(backend=backend, timeout=delta)
    else:
        size, rank = planned_world()
        dist.init_process_group(backend=backend, timeout=delta, store=store, rank=rank, world_size=size)
    Heartbeat.start(seconds)
    logger.info(
        "torchvat: initialized process group (%s): rank %d of %d, device %s",
        backend,
        dist.get_rank(),
        dist.get_world_size(),
        device,
    )
    return True


def _attempt_store(timeout: datetime.timedelta) -> Any:
    """The keys of this ``torchrun`` attempt only, in the agent's store shared across restarts (or ``None``).

    ``torchrun`` shares its rendezvous store with the workers and keeps it across the restarts of
    ``--max-restarts``, without a prefix per attempt: a restarted worker may read the address a
    worker of the previous attempt published, connect to a dead port and fail (PyTorch issue
    135712). With one agent (one node) the restart count is the same on every worker, so the
    group's keys go under ``torchvat/attempt_N``. Several nodes' agents count restarts each on
    their own: there a warning asks for ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``, which gives every
    attempt a new store.
    """
    env = os.environ
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "MASTER_ADDR" not in env or "MASTER_PORT" not in env:
        return None
    if env.get("GROUP_WORLD_SIZE", "1") != "1":
        if env.get("TORCHELASTIC_MAX_RESTARTS", "0") != "0":
            logger.warning(
                "torchvat: torchrun --max-restarts on several nodes shares its rendezvous store across "
                "restarts, so a restarted worker may connect to an address of the previous attempt; "
                "set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in the environment of torchrun on every node"
            )
        return None
    size, _ = planned_world()
    client = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), size, is_master=False, timeout=timeout)
    return dist.PrefixStore(f"torchvat/attempt_{env.get('TORCHELASTIC_RESTART_COUNT', '0')}", client)


def destroy_distributed(wait: bool = False) -> None:
    """Destroy the default process group if it is initialized (no-op otherwise).

    Args:
        wait: Meet every process at a barrier first, so that no process tears its connections
            down while another still works (rank 0 writes the report after training; a gloo
            peer that exits meanwhile can abort). Use it on the success path only: a process
            that failed must not wait for the others.

    Example:
        >>> destroy_distributed(wait=True)
    """
    if _initialized():
        if wait:
            dist.barrier()
        Heartbeat.stop()
        dist.destroy_process_group()


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every process's ``obj``, in rank order, on rank 0 (``[obj]`` when not distributed).

    Every process of the group must call it (a collective operation).

    Args:
        obj: A picklable object.

    Returns:
        The list on rank 0, ``None`` on the other processes.

    Example:
        >>> gather_to_main({"rank": 0})
        [{'rank': 0}]
    """
    if not is_distributed():
        return [obj]
    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


class Heartbeat:
    """A counter each process increments in the job's key-value store (``torchrun``'s or rank 0's).

    A daemon thread adds 1 to ``torchvat/heartbeat/RANK`` every :attr:`interval` seconds (a tenth of
    the collective timeout, between 0.2 and 1 s: one small message per second and process). When
    a collective operation fails, the process reads every counter twice, :attr:`interval` x 2.5
    apart (:meth:`silent_ranks`, at most 2.5 s before the process exits): a process whose counter
    did not move is stopped (``SIGSTOP``), killed, or cut off. The counters say nothing about
    clocks, so they hold across machines. One heartbeat per process.

    Args:
        store: The store of the default process group.
        rank: This process's rank.
        world_size: The number of processes.
        interval: Seconds between two beats.
    """

    _current: Heartbeat | None = None
    _lock = threading.Lock()
    PREFIX = "torchvat/heartbeat/"

    def __init__(self, store: Any, rank: int, world_size: int, interval: float) -> None:
        self.store = store
        self.rank = rank
        self.world_size = world_size
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="torchvat-heartbeat", daemon=True)

    def _run(self) -> None:
        key = f"{self.PREFIX}{self.rank}"
        while not self._stop.is_set():
            try:
                self.store.add(key, 1)
            except Exception:  # the store's host is gone: nothing more to say
                return
            self._stop.wait(self.interval)

    @classmethod
    def start(cls, timeout: float) -> Heartbeat | None:
        """Start this process's heartbeat for a collective timeout of ``timeout`` seconds (once).

        Returns:
            The running heartbeat, or ``None`` when not distributed or the group has no store.
        """
        with cls._lock:
            if cls._current is not None or not is_distributed():
                return cls._current
            try:
                store = dist.distributed_c10d._get_default_store()
            except (AttributeError, RuntimeError, ValueError):  # no store to beat in
                return None
            beat = cls(store, dist.get_rank(), dist.get_world_size(), min(max(timeout / 10, 0.2), 1.0))
            beat._thread.start()
            cls._current = beat
            return beat

    @classmethod
    def stop(cls) -> None:
        """Stop this process's heartbeat (if any)."""
        with cls._lock:
            if cls._current is not None:
                cls._current._stop.set()
                cls._current = None

    @classmethod
    def current(cls) -> Heartbeat | None:
        """This process's running heartbeat, or ``None``."""
        return cls._current

    def silent_ranks(self) -> list[int] | None:
        """The other processes whose counter did not move over 2.5 intervals.

        Returns:
            Their ranks (empty: every process still beats), or ``None`` when the store did not
            answer (its host, rank 0 or ``torchrun``'s agent, may be the silent process).
        """
        found: list[list[int]] = []

        def read() -> None:
            keys = [f"{self.PREFIX}{r}" for r in range(self.world_size)]
            before = [int(self.store.add(k, 0)) for k in keys]
            time.sleep(2.5 * self.interval)
            after = [int(self.store.add(k, 0)) for k in keys]
            found.append([r for r in range(self.world_size) if r != self.rank and after[r] == before[r]])

        reader = threading.Thread(target=read, name="torchvat-heartbeat-read", daemon=True)
        reader.start()
        reader.join(2.5 * self.interval + 10.0)
        return found[0] if found else None


class PeerFailureError(RuntimeError):
    """A collective operation failed: another process stopped answering (timeout) or went away.

    Args:
        message: What happened, naming the silent processes where known.
        silent: Their ranks (empty when unknown).
        step: The iterations this process had completed.
    """

    def __init__(self, message: str, silent: list[int], step: int) -> None:
        super().__init__(message)
        self.silent = silent
        self.step = step


#: what gloo, NCCL and the store say when a peer does not answer or went away (lower case)
_PEER_SIGNS = ("timed out", "timeout", "connection closed by peer", "connection reset by peer", "broken pipe")


def peer_failure(err: BaseException, *, step: int, timeout: float) -> PeerFailureError | None:
    """Explain a failed collective operation: which process stopped answering.

    Args:
        err: The exception raised in this process.
        step: The iterations this process had completed.
        timeout: The collective timeout in seconds (``TrainConfig.dist_timeout``).

    Returns:
        The error to raise instead (with ``err`` as its cause), or ``None`` when ``err`` is not
        a failed collective of a distributed run.

    Example:
        >>> peer_failure(RuntimeError("Timed out waiting 5000ms"), step=3, timeout=5) is None  # not distributed
        True
    """
    if isinstance(err, PeerFailureError) or not is_distributed():
        return None
    text = str(err)
    dist_errors = tuple(getattr(dist, name) for name in ("DistError",) if hasattr(dist, name))
    if not isinstance(err, dist_errors) and not (
        isinstance(err, RuntimeError) and any(sign in text.lower() for sign in _PEER_SIGNS)
    ):
        return None
    me = dist.get_rank()
    beat = Heartbeat.current()
    silent = beat.silent_ranks() if beat is not None else None
    timed_out = "timed out" in text.lower() or "timeout" in text.lower()
    what = (
        f"rank {me} waited more than {timeout:g} s (dist_timeout, --dist-timeout) for the other processes"
        if timed_out
        else f"rank {me} lost the connection to another process"
    )
    if silent:
        names = ", ".join(map(str, silent))
        who = f"rank {names} stopped answering (its heartbeat stopped: it exited, was killed or stopped, or is cut off)"
    elif silent is None:
        who = (
            "the silent process is unknown: the job's store did not answer (its host, rank 0 or "
            "torchrun's agent, may be the silent one)"
        )
    else:
        who = "every process still sends its heartbeat: one is stuck, or slower than the timeout allows"
    detail = " ".join(text.split())[:300]
    message = (
        f"{what} after iteration {step}: {who}; restart every process with --resume (Trainer.fit(resume=...)) "
        f"to continue from the last checkpoint ({type(err).__name__}: {detail})"
    )
    return PeerFailureError(message, silent or [], step)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Return ``src``'s ``obj`` on every process (``obj`` itself when not distributed).

    Args:
        obj: A picklable object (only ``src``'s value matters).
        src: The rank whose value is sent.

    Returns:
        ``src``'s object.

    Example:
        >>> broadcast_object({"out": "runs/a"})
        {'out': 'runs/a'}
    """
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy ``src``'s buffers (BatchNorm running statistics) to every process, in place.

    DDP broadcasts rank 0's buffers at the start of each forward pass, so after a training
    step the other ranks still hold their own last update; calling this before an evaluation
    or at the end of training makes every rank hold rank 0's model exactly.

    Args:
        module: The (unwrapped) model.
        src: The rank whose buffers are kept.

    Example:
        >>> bn = nn.BatchNorm1d(2)
        >>> broadcast_buffers(bn)  # not distributed: nothing to do
    """
    if not is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=src)


def wrap_model(model: nn.Module, device: torch.device, *, sync_batchnorm: bool = False) -> nn.Module:
    """Wrap a model in :class:`~torch.nn.parallel.DistributedDataParallel` for this process.

    ``find_unused_parameters`` stays ``False``: every torchvat loss uses every parameter of the
    model, and VAT's probe passes take gradients with respect to the perturbation only, so they
    never reach the parameters' gradient hooks where DDP's reducer launches its all-reduce.
    The wrapper broadcasts rank 0's parameters and buffers when it is built.

    Args:
        model: The model, already on ``device``. With ``sync_batchnorm`` its BatchNorm layers
            are replaced in place by :class:`~torch.nn.SyncBatchNorm` (same parameters).
        device: This process's device.
        sync_batchnorm: Whether to normalize with statistics over the global batch (needs CUDA).

    Returns:
        The DDP wrapper (``wrapper.module`` is ``model``, or its converted version).

    Raises:
        RuntimeError: If the process group is not initialized with more than one process.
        ValueError: If ``sync_batchnorm`` is asked for on a device other than CUDA.
    """
    if not is_distributed():
        raise RuntimeError(
            "wrap_model needs an initialized process group of more than one process, "
            f"got world size {world_size()}; launch with torchrun --nproc_per_node=N"
        )
    if sync_batchnorm:
        if device.type != "cuda":
            raise ValueError(
                f"sync_batchnorm=True needs CUDA devices (torch.nn.SyncBatchNorm supports GPU inputs only), "
                f"got device {device}"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" and device.index is not None else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_mean(values: Tensor) -> Tensor:
    """Mean of a tensor over the processes (the tensor itself when not distributed).

    Args:
        values: The same-shaped tensor on every process.

    Returns:
        A new tensor with the mean.

    Example:
        >>> all_reduce_mean(torch.tensor([1.0, 3.0])).tolist()
        [1.0, 3.0]
    """
    out = values.clone()
    if is_distributed():
        dist.all_reduce(out)
        out /= dist.get_world_size()
    return out


def any_process(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true on at least one process.

    Args:
        flag: This process's value.
        device: A device the backend can communicate on (CUDA for NCCL).

    Returns:
        The logical or over the processes.

    Example:
        >>> any_process(True, torch.device("cpu"))
        True
    """
    if not is_distributed():
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def rank_seed(seed: int, rank: int, stream: int, *more: int) -> int:
    """A 63-bit seed for ``(seed, rank, stream, *more)``, independent across its arguments.

    Args:
        seed: The run's seed.
        rank: The process's rank.
        stream: Which random stream (samplers, method generator, global generator).
        *more: Further integers (e.g. the step of a resume).

    Returns:
        The seed.

    Example:
        >>> rank_seed(0, 0, 1) == rank_seed(0, 0, 1) != rank_seed(0, 1, 1)
        True
    """
    return int(np.random.SeedSequence([seed, rank, stream, *more]).generate_state(2, np.uint64)[0] >> 1)


class ShardedBatchSampler:
    """Per-process slices of one global stream of shuffled index batches.

    Every process runs the same :class:`~torchvat.data.sampler.InfiniteBatchSampler` (same
    seed) with the global batch size ``batch_size * world_size`` and keeps the ``rank``-th
    slice of ``batch_size`` indices of each global batch, as ``DistributedSampler`` does for
    epochs: within a global batch the processes' batches are disjoint, every index appears
    once per epoch over all processes, and the processes' batches concatenated in rank order
    are the batch a single process with the global batch size draws. The state is that of the
    global stream, the same on every process, so rank 0's checkpoint serves them all.

    Args:
        n: Number of examples.
        batch_size: Indices per batch and process.
        rank: This process's rank.
        world_size: Number of processes.
        seed: Seed of the global stream (the same on every process).
        device: Device of the returned index tensors.

    Raises:
        ValueError: If ``rank`` is not in ``[0, world_size)``.

    Example:
        >>> shards = [ShardedBatchSampler(10, 2, rank=r, world_size=2, seed=0) for r in (0, 1)]
        >>> whole = InfiniteBatchSampler(10, 4, seed=0)
        >>> torch.equal(torch.cat([next(s) for s in shards]), next(whole))
        True
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        rank: int,
        world_size: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an integer in [0, {world_size}), got {rank!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.rank = rank
        self.world_size = world_size
        self.per_process = batch_size
        self.stream = InfiniteBatchSampler(n, batch_size * world_size, seed=seed, device=device)

    @property
    def batch_size(self) -> int:
        """The global batch size (of the shared stream)."""
        return self.stream.batch_size

    def __iter__(self) -> ShardedBatchSampler:
        return self

    def __next__(self) -> Tensor:
        """This process's ``batch_size`` indices of the next global batch."""
        start = self.rank * self.per_process
        return next(self.stream)[start : start + self.per_process]

    def state_dict(self) -> dict[str, Any]:
        """The global stream's state (see :meth:`InfiniteBatchSampler.state_dict`)."""
        return self.stream.state_dict()

    def check_state_dict(self, state: dict[str, Any]) -> None:
        """Check, without changing anything, that :meth:`load_state_dict` accepts ``state``.

        Args:
            state: A state of the global stream.

        Raises:
            ValueError: If it was saved for another ``n`` or global batch size.
        """
        self.stream.check_state_dict(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the global stream from a saved state.

        Args:
            state: A state from :meth:`state_dict` or from an :class:`InfiniteBatchSampler`.
        """
        self.stream.load_state_dict(state)
