"""The semi-supervised trainer: one loop for every method.

Override points, from the inside out: :meth:`Trainer.next_batch` (the only place labeled
and unlabeled batches are paired), :meth:`Trainer.train_step` (one iteration),
:meth:`Trainer.evaluate`, :meth:`Trainer.fit` (the loop).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from torchvat.data.sampler import InfiniteBatchSampler
from torchvat.train.callbacks import Callback, Checkpoint, JSONLogger, ProgressBar, TensorBoardLogger
from torchvat.train.checkpoint import (
    check_output_dir,
    estimate_checkpoint_nbytes,
    get_rng_state,
    load_checkpoint,
    seed_everything,
    select_device,
)
from torchvat.train.config import CUDAGRAPH_MODES, TrainConfig
from torchvat.train.defaults import derive_eps, resolve_regularize
from torchvat.train.distributed import (
    Heartbeat,
    ShardedBatchSampler,
    any_process,
    broadcast_buffers,
    gather_to_main,
    init_distributed,
    launched_by_torchrun,
    peer_failure,
    planned_world,
    rank_seed,
    resolve_device,
    world_size,
    wrap_model,
)
from torchvat.train.ema import WeightEMA
from torchvat.train.finite import (
    BufferSnapshot,
    NonFiniteLossError,
    NonFiniteRecord,
    describe_nonfinite,
    grad_finite_flags,
    supports_found_inf,
)
from torchvat.train.inputs import as_tensor, check_batch_size, check_data, check_dtypes, check_labels, required_tensor
from torchvat.train.methods import Batch, CleanPass, Method, check_method_options, get_method
from torchvat.train.metrics import CollapseMonitor, CollapseWarning, MetricAccumulator, effective_classes
from torchvat.train.optim import IterationSchedule, build_optimizer, warmup_factor
from torchvat.train.recalibrate import batchnorm_layers, recalibrate_batchnorm, recalibration_batches, swapped_buffers
from torchvat.train.state import STATE_FORMAT, check_state, process_state, restore_process_state, sampler_state
from torchvat.train.step import compute_method_loss

__all__ = [
    "CollapseWarning",
    "NonFiniteLossError",
    "TrainResult",
    "Trainer",
    "compute_method_loss",
    "effective_classes",
]

logger = logging.getLogger(__name__)
#: the format of the warning logged when a signal stopped :meth:`Trainer.fit` (the signal's name, the
#: iteration, the run's iterations, where the state is); a handler may know the record by its ``msg``
SIGNAL_NOTICE = "torchvat: %s received: training stopped after iteration %d of %d; %s"

_HPARAMS = ("eps", "xi", "alpha", "beta", "n_power", "norm", "probe", "regularize", "kl_direction")


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Args:
        history: One record per evaluation: ``step``, ``lr``, the means of the training
            terms since the previous evaluation (``train_<term>``, ``train_loss``,
            ``train_acc``) and per held-out split ``<split>_error``, ``<split>_accuracy``,
            ``<split>_loss``.
        final: The last evaluation record (empty if none).
        best: The record with the lowest monitored error (validation if present, else
            test; empty if there is no held-out data).
        eps: The perturbation size used (``None`` for methods without one).
        steps: Iterations done.
        method: The method's name.
        paths: Files written, by name (``metrics``, ``last``, ``best``, ``tensorboard``).
        config: The configuration as a dict.
        stopped_early: Whether a callback stopped training before ``iterations``.
        interrupted: The signal that stopped training (``"SIGINT"``, ``"SIGTERM"``), or ``None``.
        skipped_steps: Iterations skipped for a non-finite loss (``nonfinite="skip"``), in
            the whole run (a resumed run counts the earlier ones too).
        scaler_skipped: Iterations GradScaler skipped while finding its loss scale
            (``amp="fp16"``), in the whole run; not failures, and not in ``skipped_steps``.
    """

    history: list[dict[str, float]]
    final: dict[str, float]
    best: dict[str, float]
    eps: float | None
    steps: int
    method: str
    paths: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False
    interrupted: str | None = None
    skipped_steps: int = 0
    scaler_skipped: int = 0


def _seed_for(seed: int, rank: int, stream: int) -> int:
    """Independent 63-bit seeds for the samplers and the method's generator."""
    return rank_seed(seed, rank, stream)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


_GLOBAL_STREAM = 3  # the per-rank seed of the global generators of ranks > 0


class Trainer:
    """Train a classifier with a supervised or semi-supervised method.

    One iteration draws a labeled batch and, for methods that use unlabeled data, an
    unlabeled batch; every row goes through one clean forward pass (a pass over the labeled
    rows and a no-grad pass over the unlabeled rows, whose logits are the detached VAT target;
    or, with ``regularize="all"``, one joint pass over ``cat([x_l, x_u])``: a search's target
    always comes from a pass with the batch composition of its perturbed passes, see
    :class:`~torchvat.train.methods.CleanPass`); the method runs its perturbation search and
    perturbed pass and returns named loss terms; the trainer adds them with the method's
    weights, makes one backward pass and one optimizer step. Metrics (and the NaN/Inf check)
    stay on the device until they are logged.

    ``eps=None`` (the default) derives the perturbation size from the data:
    ``suggest_eps(x_unlabeled, rule="labeled", labeled=x_labeled)``, 0.75 x the median
    distance from an unlabeled point to its nearest labeled point (logged, and returned in
    :attr:`TrainResult.eps`).

    The data are held in memory on the training device; batches are single gathers
    ``x[idx]`` with indices from seeded samplers (seeded per process rank, batch sizes are per
    process). The constructor only stores, checks and places things on the device: it neither
    starts a process group nor touches the global random generators. :meth:`setup` does both,
    once, and :meth:`fit` and :meth:`train_step` call it: it seeds every global generator with
    ``config.seed`` (unless a state was loaded, whose generators it keeps). Seed before
    building the model too (:func:`~torchvat.train.seed_everything`) for a run that is
    identical from the initialization on.

    A regularizer with weight 0 is switched off (see :mod:`torchvat.train.methods`), so
    ``method="vat", alpha=0`` runs exactly the supervised iterations.

    With ``ema=DECAY`` the trainer keeps an exponential moving average of the weights
    (:attr:`ema`, a :class:`~torchvat.train.ema.WeightEMA`: parameters averaged after every
    applied step, BatchNorm buffers copied). :meth:`evaluate`, :meth:`predict`, the held-out
    metrics in the history and the choice of ``best.pt`` use the averaged weights; :attr:`model`
    keeps training the raw ones, and checkpoints hold both.

    Distributed (data-parallel) training: when the process was started by ``torchrun`` (or the
    default process group is already initialized) with more than one process, the trainer
    reads its rank and the number of processes at construction (from the group, or from
    ``torchrun``'s environment), trains on ``cuda:LOCAL_RANK`` for a CUDA device, and in
    :meth:`setup` (called by :meth:`fit`) initializes the group if needed (``nccl`` on CUDA,
    ``gloo`` otherwise) and wraps the model in
    :class:`~torch.nn.parallel.DistributedDataParallel` (:attr:`forward_model`; :attr:`model`
    stays the plain module, as saved in checkpoints), and gives each process its slice of one
    global batch stream (:class:`~torchvat.train.distributed.ShardedBatchSampler`):
    ``batch_size`` and ``unlabeled_batch_size`` are per process. Training metrics are averaged
    over the processes before they are logged, evaluation shards the held-out rows and sums
    over the processes, and only rank 0 writes files or shows the progress bar. A stop request
    (:attr:`should_stop`) takes effect at the next logging or evaluation iteration, when every
    process agrees on it. See ``docs/distributed.md``.

    Args:
        model: A classifier returning logits ``[B, n_classes]``. It is moved to the device.
        data: An object with attributes ``x_labeled``, ``y_labeled`` and optionally
            ``x_unlabeled``, ``x_val``, ``y_val``, ``x_test``, ``y_test`` (such as
            :class:`torchvat.data.SemiSupervisedData`), or ``None``.
        x_labeled: Labeled inputs (overrides ``data``).
        y_labeled: Their int64 class indices.
        x_unlabeled: Unlabeled inputs, or ``None``.
        x_val: Validation inputs (model selection), or ``None``.
        y_val: Validation labels.
        x_test: Test inputs, or ``None``.
        y_test: Test labels.
        config: A :class:`TrainConfig` or a dict of its fields.
        method: A method name, or a :class:`~torchvat.train.Method` instance.
        callbacks: Extra callbacks, called after the built-in ones (progress bar, and with
            ``out_dir`` the metrics file and checkpoints, and TensorBoard if enabled).
        augment: A function applied to each labeled and unlabeled input batch on the device.
            If it has ``state_dict``/``load_state_dict`` (as
            :class:`~torchvat.data.RandomTranslateFlip`), its state is saved in checkpoints and
            restored on resume; with ``manual_seed``, processes other than rank 0 reseed it on a
            resume from a checkpoint without their own state (see :meth:`load_state_dict`).
        **options: :class:`TrainConfig` fields overriding ``config``.

    Raises:
        ValueError: For invalid options (naming the field) or inconsistent data.
        TypeError: For arguments of the wrong type.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(64, 2); y = (x[:, 0] > 0).long()
        >>> model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> trainer = Trainer(model, x_labeled=x[:8], y_labeled=y[:8], x_unlabeled=x,
        ...                   x_test=x, y_test=y, method="vat", eps=0.5, iterations=20,
        ...                   eval_every=10, batch_size=8, unlabeled_batch_size=32,
        ...                   progress=False)
        >>> result = trainer.fit()
        >>> result.steps, sorted(k for k in result.final if k.startswith("train_"))
        (20, ['train_acc', 'train_ce', 'train_loss', 'train_unlabeled_classes', 'train_vat'])
    """

    #: the data splits on the training device (set in the constructor; ``None`` where not given)
    x_labeled: Tensor
    y_labeled: Tensor
    x_unlabeled: Tensor | None
    x_val: Tensor | None
    y_val: Tensor | None
    x_test: Tensor | None
    y_test: Tensor | None

    def __init__(
        self,
        model: nn.Module,
        data: Any = None,
        *,
        x_labeled: Tensor | None = None,
        y_labeled: Tensor | None = None,
        x_unlabeled: Tensor | None = None,
        x_val: Tensor | None = None,
        y_val: Tensor | None = None,
        x_test: Tensor | None = None,
        y_test: Tensor | None = None,
        config: TrainConfig | Mapping[str, Any] | None = None,
        method: str | Method | None = None,
        callbacks: Iterable[Callback] | None = None,
        augment: Callable[[Tensor], Tensor] | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, nn.parallel.DistributedDataParallel):
            raise TypeError(
                "model must be the plain module, got a DistributedDataParallel wrapper; "
                "pass wrapper.module (the trainer wraps it itself when distributed)"
            )
        cfg = self._make_config(config, method, options)
        #: ``regularize="auto"`` was resolved here (by the model): a resume takes the saved run's value
        self._regularize_resolved = cfg.regularize == "auto"
        if self._regularize_resolved:
            cfg = cfg.replace(regularize=resolve_regularize(cfg.regularize, model))
        self.config = cfg
        #: whether this trainer initialized the process group (torchrun environment), in :meth:`setup`
        self.initialized_process_group = False
        self.device = resolve_device(select_device(cfg.device))
        self.world_size, self.rank = planned_world()
        self.augment = augment
        if augment is not None and not callable(augment):
            raise TypeError(f"augment must be callable or None, got {type(augment).__name__}")

        # data: explicit tensors win over the data object's attributes
        given = {
            "x_labeled": x_labeled,
            "y_labeled": y_labeled,
            "x_unlabeled": x_unlabeled,
            "x_val": x_val,
            "y_val": y_val,
            "x_test": x_test,
            "y_test": y_test,
        }
        tensors = {k: as_tensor(k, v if v is not None else getattr(data, k, None)) for k, v in given.items()}
        self._check_data(tensors)

        # method and its eps
        if isinstance(method, Method):
            self.method = method
        else:
            clash = sorted(set(cfg.extra) & set(_HPARAMS))
            if clash:
                raise ValueError(f"extra must not repeat the config's own fields {clash}; set them directly")
            check_method_options(cfg.method, cfg.extra)  # typed for this method: a misspelt one is an error
            hparams = {k: getattr(cfg, k) for k in _HPARAMS}
            self.method = get_method(cfg.method, **hparams, **cfg.extra)
        self.eps: float | None = getattr(self.method, "eps", None)
        #: eps was derived from the data here (the method had none of its own); a resume then
        #: takes the saved run's (:meth:`load_state_dict`)
        self._eps_derived = False
        if hasattr(self.method, "eps") and self.method.eps is None and self._has_regularizer():
            self.eps = derive_eps(tensors["x_labeled"], tensors["x_unlabeled"])  # type: ignore[arg-type]  # checked
            self.method.eps = self.eps
            self._eps_derived = True
            logger.info(
                "torchvat: eps=%.6g derived from the data with suggest_eps(rule='labeled'): 0.75 x the median "
                "distance from an unlabeled point to its nearest labeled one",
                self.eps,
            )
        if self.method.uses_unlabeled and tensors["x_unlabeled"] is None:
            warnings.warn(
                f"method {self.method.name!r} uses unlabeled data but x_unlabeled is None or "
                "empty; its regularizer is applied to the labeled batches only",
                UserWarning,
                stacklevel=2,
            )

        check_dtypes(model, self.method, tensors)

        # everything on the device
        for key, value in tensors.items():
            setattr(self, key, None if value is None else value.to(self.device))
        self.model = model.to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        #: the DistributedDataParallel wrapper, made by :meth:`setup` in a distributed run
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        #: the exponential moving average of the weights (``config.ema``), or ``None``; evaluation uses it
        self.ema: WeightEMA | None = None if cfg.ema is None else WeightEMA(self.model, cfg.ema)
        self.forward_model: nn.Module = _compiled(self.model, cfg)
        self._eval_model: nn.Module = self.forward_model if self.ema is None else _compiled(self.ema.module, cfg)
        #: the evaluated model's re-estimated BatchNorm statistics (``config.bn_recalibrate``) and their step
        self._recalibrated: tuple[int, dict[str, Tensor]] | None = None
        self._check_recalibration()
        # a torchrun environment (even of one process) gets its process group in setup(), as before
        self._process_group_ready = self.world_size == 1 and not launched_by_torchrun()
        #: the global generators are this run's: seeded by :meth:`setup` or restored by :meth:`load_state_dict`
        self._rng_ready = False
        # CUDA-graph modes: a training step calls the model several times before its backward,
        # so the trainer marks where a step begins (outputs of the previous step may be reused)
        self._mark_steps = cfg.compile in CUDAGRAPH_MODES
        self.optimizer = build_optimizer(self.model, cfg)
        self.schedule = IterationSchedule(self.optimizer, cfg)
        #: the loss scaler of ``amp="fp16"`` (``torch.amp.GradScaler``), else ``None``
        self.scaler: torch.amp.GradScaler | None = self._make_scaler() if cfg.amp == "fp16" else None
        #: iterations GradScaler skipped (``amp="fp16"``), read at logging points (:meth:`read_scaler_skipped`)
        self.scaler_skipped = 0
        self._scaler_skipped_pending = torch.zeros((), dtype=torch.int64, device=self.device)
        trained = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self._trained_params = [p for _, p in trained]
        self._nonfinite = NonFiniteRecord(self.device, [n for n, _ in trained])
        #: device flag of the last :meth:`train_step`: its update was applied (``None``: not checked)
        self.last_step_ok: Tensor | None = None

        rank = self.rank
        self.labeled_sampler = self._sampler(int(self.x_labeled.shape[0]), cfg.batch_size, 0)
        self.unlabeled_sampler = (
            None
            if self.x_unlabeled is None
            else self._sampler(int(self.x_unlabeled.shape[0]), cfg.unlabeled_batch_size, 1)
        )
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(_seed_for(cfg.seed, rank, 2))

        self.step = 0
        self.history: list[dict[str, float]] = []
        self.best: dict[str, float] = {}
        self.paths: dict[str, str] = {}
        self.should_stop = False
        self._log_acc = MetricAccumulator()
        self._eval_acc = MetricAccumulator()
        self._collapse = CollapseMonitor()
        #: effective number of classes of the labels (:func:`effective_classes`); ``None`` for
        #: real-valued targets (regression), where ``unlabeled_classes`` is not computed
        self.labeled_classes: float | None = None
        if not self.y_labeled.is_floating_point() and not self.y_labeled.is_complex():
            counts = torch.bincount(self.y_labeled.long().clamp_min(0).cpu()).float()
            self.labeled_classes = float(effective_classes(counts / counts.sum().clamp_min(1)))
        #: iterations skipped for a non-finite loss (``nonfinite="skip"``)
        self.skipped_steps = 0
        #: the signal that stopped the last :meth:`fit` (``"SIGINT"``, ``"SIGTERM"``) or ``None``
        self.interrupted: str | None = None
        self._labels_checked = False
        self.callbacks = self._default_callbacks() + list(callbacks or [])
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__}")

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Start what training needs outside the trainer, once: the process group and the global generators.

        In a distributed run, initialize the default process group if this process was started
        by ``torchrun`` and nobody initialized it (:func:`~torchvat.train.distributed.init_distributed`;
        :attr:`initialized_process_group` says whether this call did) and wrap the model in
        :class:`~torch.nn.parallel.DistributedDataParallel` (:attr:`ddp`). Then seed Python's,
        NumPy's and PyTorch's global generators with ``config.seed`` (processes other than rank
        0 with a seed of their own, for independent dropout masks), unless a state was loaded
        (:meth:`load_state_dict`), whose generators are kept. :meth:`fit` and
        :meth:`train_step` call it; later calls do nothing. The constructor does neither, so
        building a trainer leaves the caller's random state and process group alone.

        Raises:
            RuntimeError: If the process group that is (or gets) initialized has another size
                or rank than the environment this trainer was built for.
        """
        self._setup_process_group()
        if not self._rng_ready:
            seed_everything(self.config.seed)
            if self.rank > 0:  # independent dropout masks on every process
                seed_everything(_seed_for(self.config.seed, self.rank, _GLOBAL_STREAM))
            self._rng_ready = True

    def _setup_process_group(self) -> None:
        """Initialize the process group and wrap the model, in a distributed run (once)."""
        if self._process_group_ready:
            return
        self.initialized_process_group = init_distributed(self.device, self.config.dist_timeout)
        if (world_size(), _rank()) != (self.world_size, self.rank):
            raise RuntimeError(
                f"the process group has {world_size()} processes and this is rank {_rank()}, but the trainer "
                f"was built for {self.world_size} processes at rank {self.rank} (from torchrun's environment)"
            )
        cfg = self.config
        if self.world_size > 1:
            # every training forward goes through the wrapper; see docs/distributed.md
            ddp = wrap_model(self.model, self.device, sync_batchnorm=cfg.sync_batchnorm)
            assert isinstance(ddp, nn.parallel.DistributedDataParallel)  # what wrap_model returns (not user input)
            self.ddp = ddp
            self.model = ddp.module
            self.forward_model = _compiled(ddp, cfg)
            self._eval_model = _compiled(self.model if self.ema is None else self.ema.module, cfg)
            Heartbeat.start(cfg.dist_timeout)  # names a silent process when a collective fails
            if self.ema is not None:  # rank 0's average (its initial weights, or the loaded ones)
                self.ema.broadcast()
        self._process_group_ready = True

    def _make_scaler(self) -> torch.amp.GradScaler:
        """The GradScaler of ``amp="fp16"``; refused where float16 autocast or loss scaling cannot work."""
        device = self.device.type
        if not torch.amp.is_autocast_available(device):
            raise ValueError(f"amp='fp16' needs float16 autocast on the training device, which {device!r} lacks")
        half = (torch.float16, torch.bfloat16)
        low = sorted({str(p.dtype) for p in self.model.parameters() if p.requires_grad and p.dtype in half})
        if low:
            raise ValueError(
                f"amp='fp16' needs float32 parameters (autocast computes in float16, the optimizer updates "
                f"float32 weights with unscaled gradients), got parameters in {', '.join(low)}; "
                "convert the model with model.float()"
            )
        return torch.amp.GradScaler(device)

    def _sampler(self, n: int, batch_size: int, stream: int) -> InfiniteBatchSampler | ShardedBatchSampler:
        """One process's batch stream: its slice of the global stream when distributed."""
        seed = _seed_for(self.config.seed, 0, stream)  # the same global stream on every process
        if self.world_size == 1:
            return InfiniteBatchSampler(n, batch_size, seed=seed, device=self.device)
        return ShardedBatchSampler(
            n, batch_size, rank=self.rank, world_size=self.world_size, seed=seed, device=self.device
        )

    @staticmethod
    def _make_config(
        config: TrainConfig | Mapping[str, Any] | None, method: Any, options: dict[str, Any]
    ) -> TrainConfig:
        if config is None:
            cfg = TrainConfig()
        elif isinstance(config, TrainConfig):
            cfg = config
        elif isinstance(config, Mapping):
            cfg = TrainConfig.from_dict(dict(config))
        else:
            raise TypeError(f"config must be a TrainConfig, a dict or None, got {type(config).__name__}")
        if isinstance(method, Method):
            options = {**options, "method": method.name}
        elif isinstance(method, str):
            options = {**options, "method": method}
        elif method is not None:
            raise TypeError(f"method must be a name or a Method, got {type(method).__name__}")
        return cfg.replace(**options) if options else cfg

    #: the check of the data splits (:func:`~torchvat.train.inputs.check_data`); an override point
    #: for trainers with other targets (regression)
    _check_data = staticmethod(check_data)

    def _has_regularizer(self) -> bool:
        return any(k not in self.method.supervised_terms for k in self.method.weights)

    def _default_callbacks(self) -> list[Callback]:
        cfg = self.config
        cbs: list[Callback] = [ProgressBar(enabled=cfg.progress)]
        if cfg.out_dir is not None:
            cbs += [JSONLogger(), Checkpoint()]
        if cfg.tensorboard:
            cbs.append(TensorBoardLogger())
        return cbs

    def _call(self, hook: str, **kwargs: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(trainer=self, **kwargs)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        if self.config.amp == "fp16":
            return torch.autocast(device_type=self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    # --------------------------------------------------------------- training
    def next_batch(self) -> Batch:
        """Draw the next labeled batch and, if the method uses it, the next unlabeled batch.

        This is the only place where labeled and unlabeled batches are paired. The labeled
        stream cycles (a batch may span two passes over a few labels); the unlabeled stream
        has its own sampler and batch size. The optional ``augment`` is applied here.

        Returns:
            The batch, on the training device.
        """
        idx = next(self.labeled_sampler)
        x_l, y_l = self.x_labeled[idx], self.y_labeled[idx]
        x_u = None
        if self.method.uses_unlabeled and self.unlabeled_sampler is not None and self.x_unlabeled is not None:
            x_u = self.x_unlabeled[next(self.unlabeled_sampler)]
        if self.augment is not None:
            x_l = self.augment(x_l)
            x_u = None if x_u is None else self.augment(x_u)
        if self.config.channels_last:
            x_l, x_u = self._memory_format(x_l), None if x_u is None else self._memory_format(x_u)
        return Batch(x_labeled=x_l, y_labeled=y_l, x_unlabeled=x_u)

    def _memory_format(self, x: Tensor) -> Tensor:
        """``x`` in the channels-last memory format when it is 4-D and ``config.channels_last``."""
        if self.config.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def loss_weights(self) -> dict[str, float]:
        """The method's weights at the current iteration (regularizers ramped by warm-up).

        Returns:
            Weight by term name.
        """
        ramp = warmup_factor(self.step, self.config.warmup_iters, self.config.warmup_shape)
        sup = self.method.supervised_terms
        return {k: w if k in sup else w * ramp for k, w in self.method.weights.items()}

    def train_step(self, batch: Batch) -> dict[str, Tensor]:
        """Run one iteration: clean pass, method's terms, one backward, one optimizer step.

        Unless ``config.nonfinite`` is ``"ignore"``, the loss and the gradients are checked
        after the backward pass; when one is NaN/Inf the update is not applied and the
        model's buffers (BatchNorm statistics) are restored. With the trainer's optimizers
        (fused Adam or SGD, see :func:`~torchvat.train.finite.supports_found_inf`) this
        happens on the device, without a host synchronization: the iteration is recorded and
        reported by :meth:`check_nonfinite` (which :meth:`fit` calls on logging, evaluation
        and checkpoint iterations), and with ``"stop"`` no later update is applied until
        then, so the weights stay those before the failed iteration. With another optimizer
        the check reads the flag at once (one host synchronization per iteration) and
        skips (``"skip"``: an empty dict is returned) or raises
        :class:`NonFiniteLossError` (``"stop"``) immediately. With ``amp="fp16"`` the loss is
        scaled by :attr:`scaler` before the backward pass and the gradients unscaled after it;
        non-finite gradients of a finite loss are the scaler's overflow, skipped and counted in
        :attr:`scaler_skipped` whatever ``nonfinite`` says; a non-finite loss is a failure as
        without fp16. With ``config.ema`` the average of the weights follows every applied step.

        Args:
            batch: From :meth:`next_batch`.

        Returns:
            Detached device tensors: every loss term, ``loss`` (the weighted sum) and
            ``acc`` (accuracy on the labeled batch); empty for an iteration skipped by the
            immediate check. :attr:`last_step_ok` holds the device flag of the iteration.

        Raises:
            ValueError: If the method returns a term that has no weight, or a label is not
                below the model's number of outputs.
            TypeError: If the model does not return a tensor.
            NonFiniteLossError: For a non-finite loss or gradient with ``nonfinite="stop"``
                and an optimizer that cannot skip its update on the device.
        """
        self.setup()
        self.model.train()
        if self._mark_steps:
            torch.compiler.cudagraph_mark_step_begin()
        policy = self.config.nonfinite
        buffers = BufferSnapshot(list(self.model.buffers()) if policy != "ignore" or self.scaler else [])
        try:
            with self._autocast():
                loss, terms, clean = compute_method_loss(
                    self.forward_model,
                    self.method,
                    batch,
                    self.loss_weights(),
                    generator=self.generator,
                    on_clean=None if self._labels_checked else self._check_labels,
                    labeled_stats=self.config.labeled_stats,
                )
        except ValueError as err:
            if "Expected more than 1 value per channel" not in str(err):
                raise
            raise ValueError(
                f"batch_size={self.config.batch_size} (unlabeled_batch_size={self.config.unlabeled_batch_size}) "
                "is too small for the model's BatchNorm layers in training mode, which need more than one "
                f"value per channel ({err}); use batch sizes >= 2"
            ) from err

        # one backward, one optimizer step
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        self.schedule.apply(self.step)
        self.last_step_ok = None
        if self.scaler is not None:
            if not self._scaled_step(loss, terms, buffers):
                return {}
        elif policy == "ignore":
            self.optimizer.step()
        elif supports_found_inf(self.optimizer):
            ok, flags = self._step_finite(loss)
            self._nonfinite.record(self.step + 1, ok, terms, loss, flags)
            if policy == "stop":  # after a failure, nothing is applied until it is reported
                ok = ok & self._nonfinite.clean
            self._masked_step(ok)
            buffers.restore(ok, list(self.model.buffers()))
            self.last_step_ok = ok
        else:
            ok, flags = self._step_finite(loss)
            if not bool(ok):  # one host read per iteration
                self._nonfinite.record(self.step + 1, ok, terms, loss, flags)
                summary = self._nonfinite.read()
                self.optimizer.zero_grad(set_to_none=True)
                buffers.restore(torch.zeros((), dtype=torch.bool), list(self.model.buffers()))
                message = describe_nonfinite(summary, self.step)
                if policy == "stop":
                    raise NonFiniteLossError(message, self.step + 1, summary.terms if summary else {})
                self.skipped_steps += 1
                logger.warning("torchvat: %s; iteration skipped (nonfinite='skip')", message)
                return {}
            self.optimizer.step()

        if self.ema is not None:  # after the step, on the device flag of whether it was applied
            self.ema.update(self.model, self.last_step_ok)

        # metrics stay on the device; they are synchronized only when logged
        metrics = {name: term.detach() for name, term in terms.items()}
        metrics["loss"] = loss.detach()
        with torch.no_grad():
            metrics["acc"] = (clean.labeled_logits.argmax(1) == batch.y_labeled).float().mean()
            unlabeled = clean.unlabeled_logits_any
            classify = self.labeled_classes is not None
            if classify and unlabeled is not None and unlabeled.ndim == 2 and unlabeled.shape[0] > 0:
                metrics["unlabeled_classes"] = effective_classes(unlabeled.detach().float().softmax(1).mean(0))
        return metrics

    def _scaled_step(self, loss: Tensor, terms: dict[str, Tensor], buffers: BufferSnapshot) -> bool:
        """The optimizer step of ``amp="fp16"``: unscale, skip on the device where GradScaler would, update the scale.

        Non-finite gradients of a finite loss are the scaler's overflow (its scale was too large):
        the step is skipped, the scale lowered and the iteration counted in :attr:`scaler_skipped`,
        whatever ``config.nonfinite`` says. A non-finite loss is a failure, handled by
        ``config.nonfinite`` as without fp16.

        Returns:
            Whether the iteration's metrics count (``False`` only for a step skipped by the
            immediate, host-read check of an optimizer that cannot skip on the device flag).
        """
        assert self.scaler is not None  # called with amp="fp16" only
        policy = self.config.nonfinite
        self.scaler.unscale_(self.optimizer)
        flags = grad_finite_flags([p.grad for p in self._trained_params])
        loss_ok = torch.isfinite(loss.detach()).all().to(flags.device)
        if self.world_size > 1:  # the gradients are reduced already; a loss may differ between processes
            bad = (~loss_ok).float().reshape(1).to(self.device)
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
            loss_ok = (bad[0] == 0).to(flags.device)
        overflow = loss_ok & ~flags.all()
        ok = loss_ok & ~overflow
        if policy != "ignore":  # only a non-finite loss is a failure; the gradients' flags name nothing then
            self._nonfinite.record(self.step + 1, loss_ok, terms, loss, torch.ones_like(flags))
            if policy == "stop":
                ok = ok & self._nonfinite.clean
        self._scaler_skipped_pending += overflow.to(self._scaler_skipped_pending.device, torch.int64)
        counts = True
        if supports_found_inf(self.optimizer):
            self._masked_step(ok)
            buffers.restore(ok, list(self.model.buffers()))
            self.last_step_ok = ok
        elif bool(ok):  # one host read per iteration
            self.optimizer.step()
        else:
            self.optimizer.zero_grad(set_to_none=True)
            buffers.restore(torch.zeros((), dtype=torch.bool), list(self.model.buffers()))
            counts = False
            if policy != "ignore" and not bool(loss_ok):
                summary = self._nonfinite.read()
                message = describe_nonfinite(summary, self.step)
                if policy == "stop":
                    self.scaler.update()
                    raise NonFiniteLossError(message, self.step + 1, summary.terms if summary else {})
                self.skipped_steps += 1
                logger.warning("torchvat: %s; iteration skipped (nonfinite='skip')", message)
        self.scaler.update()  # a lower scale after an overflow, a higher one after enough clean steps
        return counts

    def read_scaler_skipped(self) -> int:
        """The iterations GradScaler skipped so far (``amp="fp16"``; one host read, at logging points).

        Returns:
            The count over the whole run (a resumed run counts the earlier ones too).
        """
        pending = int(self._scaler_skipped_pending)
        if pending:
            self.scaler_skipped += pending
            self._scaler_skipped_pending.zero_()
        return self.scaler_skipped

    def _step_finite(self, loss: Tensor) -> tuple[Tensor, Tensor]:
        """Device flags: the loss and every gradient are finite (and on every process), per-gradient."""
        flags = grad_finite_flags([p.grad for p in self._trained_params])
        ok = torch.isfinite(loss.detach()).all().to(flags.device) & flags.all()
        if self.world_size > 1:  # gradients are reduced already; a loss may differ between processes
            bad = (~ok).float().reshape(1).to(self.device)
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
            ok = (bad[0] == 0).to(flags.device)
        return ok, flags

    def _masked_step(self, ok: Tensor) -> None:
        """One optimizer step that the optimizer skips on the device where ``ok`` is false."""
        opt = self.optimizer
        opt.grad_scale = None  # type: ignore[attr-defined]
        opt.found_inf = (~ok).float()  # type: ignore[attr-defined]
        try:
            opt.step()
        finally:
            del opt.found_inf, opt.grad_scale  # type: ignore[attr-defined]

    def check_nonfinite(self) -> None:
        """Report the iterations skipped on the device since the last call (one host read).

        With ``nonfinite="skip"``, they are added to :attr:`skipped_steps` and a warning names
        how many and the first one. With ``"stop"``, the step count goes back to the one
        before the failed iteration (the weights, optimizer state and BatchNorm statistics
        are those after it already; the data streams and random generators stay where
        they are) and :class:`NonFiniteLossError` is raised. Nothing happens when every
        iteration was finite, or when the check is immediate (see :meth:`train_step`).

        Raises:
            NonFiniteLossError: With ``nonfinite="stop"`` after a non-finite iteration.
        """
        summary = self._nonfinite.read()
        if summary is None:
            return
        message = describe_nonfinite(summary, self.step)
        if self.config.nonfinite == "stop":
            self.step = summary.first - 1
            self.schedule.apply(self.step)
            self._log_acc.reset()
            raise NonFiniteLossError(message, summary.first, summary.terms)
        self.skipped_steps += summary.count
        logger.warning(
            "torchvat: %d iteration(s) skipped (nonfinite='skip') between iterations %d and %d; the first: %s",
            summary.count,
            summary.first,
            self.step,
            message,
        )

    def _check_labels(self, clean: CleanPass) -> None:
        """Once per trainer, after the first clean pass: labels must be below the number of outputs."""
        self._labels_checked = True
        check_labels(clean, {f"y_{split}": getattr(self, f"y_{split}") for split in ("labeled", "val", "test")})

    @contextlib.contextmanager
    def _catch_signals(self) -> Iterator[None]:
        """Turn the first SIGINT/SIGTERM into a stop request; a second one acts as usual."""
        if not self.config.catch_signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous: dict[int, Any] = {}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            previous.clear()

        def on_signal(signum: int, frame: Any) -> None:
            restore()
            self.interrupted = signal.Signals(signum).name
            self.should_stop = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, on_signal)
            except (ValueError, OSError):  # not settable here
                continue
        try:
            yield
        finally:
            restore()

    def _preflight(self) -> None:
        """Before training: the output directory must be writable, with room for two checkpoints."""
        if self.config.out_dir is not None and self.rank == 0:
            check_output_dir(self.config.out_dir, 2 * estimate_checkpoint_nbytes(self.model, self.optimizer))

    def fit(self, resume: str | os.PathLike[str] | None = None) -> TrainResult:
        """Train until ``config.iterations`` (continuing from the current step).

        Faults: before the first iteration the output directory (``config.out_dir``) is
        checked (created, writable; the :class:`Checkpoint` callback also checks the free
        space). With ``config.catch_signals`` the first SIGINT/SIGTERM stops training after
        the current iteration, ``on_train_end`` runs (the built-in checkpoint callback
        writes ``last.pt``) and a warning says how to resume; :attr:`TrainResult.interrupted`
        names the signal. A NaN/Inf loss or gradient is handled as ``config.nonfinite`` says;
        with ``"stop"`` the callbacks' ``on_train_end`` runs (``last.pt`` holds the weights
        before the failed iteration) and then :class:`NonFiniteLossError` is raised. Any
        other exception (from the model, an evaluation, a callback, ``on_train_end``, or a
        ``KeyboardInterrupt`` without ``catch_signals``) calls every callback's
        :meth:`~torchvat.train.Callback.on_exception` instead, which closes the metrics file,
        the TensorBoard writer and the progress bar, and is raised again; no checkpoint is
        written then (the state may be torn mid-iteration), so ``last.pt``, its previous
        versions and ``best.pt`` stay those of the last checkpoint iteration.

        Args:
            resume: A checkpoint file to load first (see :meth:`load_state_dict`).

        Returns:
            The history, final and best metrics, the eps used and the files written.

        Raises:
            NonFiniteLossError: For a non-finite loss or gradient with ``nonfinite="stop"``.
            OSError: If the output directory is not writable or the disk is too full.
            CheckpointError: If ``resume`` is unreadable or corrupted (from
                :func:`~torchvat.train.load_checkpoint`).
        """
        self.setup()
        if resume is not None:
            self.load_state_dict(load_checkpoint(resume))
        cfg = self.config
        self.should_stop = False
        self.interrupted = None
        stop = False
        failure: NonFiniteLossError | None = None
        self._preflight()
        with self._catch_signals():
            try:
                self._call("on_train_begin")
                while self.step < cfg.iterations and not stop:
                    self._call("on_step_begin", step=self.step)
                    try:
                        metrics = self.train_step(self.next_batch())
                        self.step += 1
                        if metrics:
                            self._log_acc.add(metrics, self.last_step_ok)
                            self._eval_acc.add(metrics, self.last_step_ok)
                        logs = None
                        log_now = self.step % cfg.log_every == 0 or self.step == cfg.iterations
                        evaluated = self.step % cfg.eval_every == 0 or self.step == cfg.iterations
                        if log_now or evaluated:
                            self.check_nonfinite()  # iterations that synchronize anyway
                        if log_now:
                            logs = self._log_acc.means()
                            self._log_acc.reset()
                            if self.scaler is not None:  # a logging point: the host reads the scaler here
                                logs["scaler_skipped"] = float(self.read_scaler_skipped())
                                logs["loss_scale"] = float(self.scaler.get_scale())
                        if evaluated:
                            self._evaluate_held_out()
                        self._call("on_step_end", step=self.step, metrics=metrics, logs=logs, evaluated=evaluated)
                    except NonFiniteLossError as err:
                        failure = err
                        break
                    if self.world_size == 1:
                        stop = self.should_stop
                    elif logs is not None or evaluated:  # iterations that synchronize anyway
                        stop = self.should_stop = any_process(self.should_stop, self.device)
                if failure is None:
                    try:
                        self.check_nonfinite()  # an early stop or a signal between logging iterations
                    except NonFiniteLossError as err:
                        failure = err
                result = self._finish()
            except BaseException as err:  # any other failure: release the callbacks' files
                self._call_on_exception(err)
                lost = peer_failure(err, step=self.step, timeout=cfg.dist_timeout)  # a silent process, named
                if lost is not None:
                    raise lost from err
                raise
        if failure is not None:
            saved = result.paths.get("last")
            failure.args = (
                f"{failure}; training stopped (nonfinite='stop'): the update was not applied"
                + (f", and the weights before it are saved in {saved}" if saved else "")
                + "; lower the learning rate or eps, or set nonfinite='skip' (--nonfinite skip) to skip them",
            )
            raise failure
        if self.interrupted is not None:
            saved = result.paths.get("last")
            where = (
                f"the state is saved in {saved}; resume with Trainer.fit(resume=PATH) or torchvat train --resume PATH"
                if saved
                else "no out_dir"
            )
            logger.warning(
                SIGNAL_NOTICE,
                self.interrupted,
                self.step,
                cfg.iterations,
                where,
            )
        return result

    def _call_on_exception(self, exception: BaseException) -> None:
        """Every callback's ``on_exception``; one that fails is logged and the others still run."""
        for cb in self.callbacks:
            try:
                cb.on_exception(trainer=self, exception=exception)
            except Exception:  # the original exception is the one to raise
                logger.exception("torchvat: %s.on_exception failed", type(cb).__name__)

    def _finish(self) -> TrainResult:
        """End of :meth:`fit`: the schedule's final values, the result, ``on_train_end``."""
        cfg = self.config
        self.schedule.apply(self.step)  # the optimizer now shows the values after the last step
        broadcast_buffers(self.model)  # every process ends with rank 0's model
        if self.ema is not None:
            broadcast_buffers(self.ema.module)
        result = TrainResult(
            history=[dict(r) for r in self.history],
            final=dict(self.history[-1]) if self.history else {},
            best=dict(self.best),
            eps=self.eps,
            steps=self.step,
            method=self.method.name,
            paths=self.paths,
            config=cfg.to_dict(),
            stopped_early=self.step < cfg.iterations,
            interrupted=self.interrupted,
            skipped_steps=self.skipped_steps,
            scaler_skipped=self.read_scaler_skipped(),
        )
        self._call("on_train_end", result=result)
        result.paths = dict(self.paths)
        return result

    # ------------------------------------------------------------- evaluation
    def _evaluate_held_out(self) -> None:
        broadcast_buffers(self.model)  # rank 0's BatchNorm statistics on every process
        if self.ema is not None:
            broadcast_buffers(self.ema.module)
        record: dict[str, float] = {"step": self.step, "lr": self.optimizer.param_groups[0]["lr"]}
        record.update({f"train_{k}": v for k, v in self._eval_acc.means().items()})
        self._eval_acc.reset()
        for split in ("val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x is not None:
                record.update({f"{split}_{k}": v for k, v in self.evaluate(x, y).items() if k != "n"})
        monitor = "val_error" if self.x_val is not None else "test_error" if self.x_test is not None else None
        improved = monitor is not None and (not self.best or record[monitor] < self.best[monitor])
        if improved:
            self.best = dict(record)
        self.history.append(record)
        self._check_collapse(monitor)
        self._call("on_eval_end", step=self.step, metrics=record, improved=improved)

    def _check_collapse(self, monitor: str | None) -> None:
        """Warn (:class:`CollapseWarning`) about the two ways a regularizer collapses (see :class:`CollapseMonitor`)."""
        self._collapse.check(
            self.history,
            monitor,
            patience=self.config.collapse_patience,
            labeled_classes=self.labeled_classes,
            step=self.step,
            stacklevel=3,
        )

    @torch.no_grad()
    def predict_logits(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        """Logits of the model in eval mode, computed in batches on the training device.

        Args:
            x: Inputs ``[N, ...]`` on any device.
            batch_size: Rows per forward pass (default ``config.eval_batch_size``).

        Returns:
            Float logits ``[N, n_classes]`` on the training device.

        Raises:
            ValueError: If ``batch_size`` is not an integer >= 1 or ``None``.
        """
        x = required_tensor("x", x)
        check_batch_size(batch_size)
        bs = self.config.eval_batch_size if batch_size is None else int(batch_size)
        was_training = self.model.training
        self.model.eval()
        try:
            outs = []
            with swapped_buffers(self._evaluated_module(), self.recalibrated_statistics() or {}):
                for start in range(0, x.shape[0], bs):
                    with self._autocast():
                        chunk = self._memory_format(x[start : start + bs].to(self.device))
                        # a copy: a CUDA-graph mode reuses the output's memory in the next call
                        outs.append(self._eval_model(chunk).to(torch.float32, copy=True))
            return torch.cat(outs) if outs else torch.empty(0, device=self.device)
        finally:
            self.model.train(was_training)

    def predict(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        """Predicted class indices.

        Args:
            x: Inputs ``[N, ...]``.
            batch_size: Rows per forward pass (default ``config.eval_batch_size``).

        Returns:
            int64 tensor ``[N]`` on CPU.

        Raises:
            ValueError: If ``batch_size`` is not an integer >= 1 or ``None``.
        """
        return self.predict_logits(x, batch_size).argmax(1).cpu()

    def evaluate(self, x: Tensor, y: Tensor, batch_size: int | None = None) -> dict[str, float]:
        """Error, accuracy and mean cross-entropy on ``(x, y)``.

        When distributed, every process must call this with the same ``(x, y)``: each one
        evaluates its share of the rows (``x[rank::world_size]``) and the sums and counts are
        reduced across the processes before dividing.

        Args:
            x: Inputs ``[N, ...]``.
            y: Class indices ``[N]``.
            batch_size: Rows per forward pass (default ``config.eval_batch_size``).

        Returns:
            ``{"error", "accuracy", "loss", "n"}``.

        Raises:
            ValueError: If ``x`` and ``y`` have different numbers of rows or are empty, or
                ``batch_size`` is not an integer >= 1 or ``None``.
        """
        x, y = required_tensor("x", x), required_tensor("y", y)
        check_batch_size(batch_size)  # on every process, also one whose share of the rows is empty
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(f"x and y must have the same, non-zero number of rows, got {x.shape[0]} and {y.shape[0]}")
        if self.world_size > 1:
            self._setup_process_group()
            x, y = x[self.rank :: self.world_size], y[self.rank :: self.world_size]
        y = y.to(self.device).long()
        if y.shape[0] == 0:  # fewer rows than processes
            sums = torch.zeros(3, device=self.device)
        else:
            logits = self.predict_logits(x, batch_size)
            sums = torch.stack(
                [
                    F.cross_entropy(logits, y, reduction="sum"),
                    (logits.argmax(1) == y).sum().float(),
                    torch.tensor(float(y.shape[0]), device=self.device),
                ]
            )
        if self.world_size > 1:
            dist.all_reduce(sums)
        loss, correct, n = sums.tolist()
        return {"error": 1.0 - correct / n, "accuracy": correct / n, "loss": loss / n, "n": int(n)}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly where it is.

        Model, optimizer, schedule, CPU/Python/NumPy/device random states, the method's
        generator, the augmentation's state (when it has a ``state_dict``), the samplers'
        positions, the step, metric history and accumulators, and the config, as tensors and
        plain containers (loadable with ``weights_only=True``). With ``config.ema``, ``"ema"``
        holds the averaged weights beside the raw ones in ``"model"`` (``None`` without); with
        ``amp="fp16"``, ``"scaler"`` holds GradScaler's state (its scale and growth tracker);
        the average and the scaler are the same on every process. ``"ranks"`` holds every
        process's own part (:func:`~torchvat.train.state.process_state`); in a distributed run
        only :meth:`gather_state_dict` can fill it (here it is ``None``), and the top-level
        random states and accumulators are this process's.

        Iterations skipped on the device are reported first (:meth:`check_nonfinite`), so a
        saved state never hides a pending failure.

        Returns:
            The state.

        Raises:
            NonFiniteLossError: With ``nonfinite="stop"`` after a non-finite iteration.
        """
        self.check_nonfinite()
        augment: Any = self.augment  # a function, optionally with state_dict (checked by hasattr)
        return {
            "format": STATE_FORMAT,
            "step": self.step,
            "world_size": self.world_size,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": get_rng_state(self.device),
            "generator": self.generator.get_state(),
            "augment": augment.state_dict() if hasattr(augment, "state_dict") else None,
            "samplers": {
                "labeled": self.labeled_sampler.state_dict(),
                "unlabeled": None if self.unlabeled_sampler is None else self.unlabeled_sampler.state_dict(),
            },
            "history": [dict(r) for r in self.history],
            "best": dict(self.best),
            "accumulators": {"log": self._log_acc.state_dict(), "eval": self._eval_acc.state_dict()},
            # every process's own part (one per rank): gather_state_dict fills it in a distributed run
            "ranks": [process_state(self)] if self.world_size == 1 else None,
            "collapse_streak": self._collapse.collapse_streak,
            "class_streak": self._collapse.class_streak,
            "skipped_steps": self.skipped_steps,
            "method": self.method.name,
            "eps": self.eps,
            "config": self.config.to_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "scaler_skipped": self.scaler_skipped + int(self._scaler_skipped_pending),
            # the evaluated model's re-estimated BatchNorm statistics at this step, when computed
            # (``bn_recalibrate``; read by torchvat.runs.load_run, not by load_state_dict)
            "bn_recalibrated": (
                dict(self._recalibrated[1])
                if self._recalibrated is not None and self._recalibrated[0] == self.step
                else None
            ),
        }

    def gather_state_dict(self) -> dict[str, Any] | None:
        """:meth:`state_dict` with every process's own part, on rank 0: a collective operation.

        Every process calls it (the :class:`~torchvat.train.Checkpoint` callback does, at each
        checkpoint): each one's generators, augmentation state and metric accumulators
        (:func:`~torchvat.train.state.process_state`) are gathered to rank 0 under ``"ranks"``,
        so one file resumes every process exactly. Without a process group it is :meth:`state_dict`.

        Returns:
            The state on rank 0, ``None`` on the other processes.

        Raises:
            NonFiniteLossError: With ``nonfinite="stop"`` after a non-finite iteration.
        """
        self.check_nonfinite()  # on every process, before any of them gathers
        ranks = gather_to_main(process_state(self))
        if ranks is None:
            return None
        state = self.state_dict()
        state["ranks"] = ranks
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (e.g. a loaded checkpoint).

        A checkpoint written by a run with another number of processes continues with the
        same per-process batch sizes: the global data stream goes on from the saved position
        with the new global batch size. In a distributed run, every process loads the file;
        one written by :meth:`gather_state_dict` with as many processes gives each process its
        own generators, augmentation state and accumulators back, so the resumed run is bitwise
        the uninterrupted one. With another number of processes, or a state without every
        process's part (``state_dict()`` of one process of a distributed run, or a checkpoint
        written before they were saved), processes other than rank 0 reseed their random
        generators from ``(seed, rank, step)`` (rank 0 logs a notice): a valid continuation,
        not bitwise an uninterrupted one.

        The state (weights, optimizer moments, step, random streams) is the checkpoint's; the
        hyperparameters are this trainer's config: a learning rate, weight decay, momentum, eps,
        alpha, schedule length, ... that differ from the saved run's take effect from the next
        iteration (``lr`` scales the schedule's base rates; after a run saved with ``lr=0`` the
        base rates are the new ``lr``). The eps of a :class:`~torchvat.train.Method` instance
        or of the config is kept; only an eps this trainer derived from the data (``eps=None``)
        is replaced by the saved run's.

        Everything is checked before anything is changed: a refused state leaves the trainer
        as it was.

        Args:
            state: The saved state.

        Raises:
            ValueError: If the state belongs to another method, data size, model, optimizer or
                batch size, or is not a trainer state (naming the saved and the current value).
        """
        check_state(self, state)
        saved_ema = state.get("ema")
        if self.ema is not None and saved_ema is not None:
            self.ema.check_state_dict(saved_ema)
        saved_config = state.get("config") or {}
        saved_world = int(state.get("world_size", 1))
        self.model.load_state_dict(state["model"])
        self._load_ema(saved_ema)
        self._recalibrated = None
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self._apply_changed_hyperparameters(saved_config)
        self._keep_saved_regularize(saved_config)
        self.labeled_sampler.load_state_dict(sampler_state(state["samplers"]["labeled"], saved_world, self.world_size))
        saved_u = state["samplers"]["unlabeled"]
        if saved_u is not None and self.unlabeled_sampler is not None:
            self.unlabeled_sampler.load_state_dict(sampler_state(saved_u, saved_world, self.world_size))
        own = restore_process_state(self, state)  # generators, augmentation, accumulators
        self._rng_ready = True  # the saved run's generators: setup() does not reseed them
        self.step = int(state["step"])
        augment: Any = self.augment  # a function, optionally with manual_seed (checked by hasattr)
        if not own:  # the file holds rank 0's random state only: derive this process's own
            self.generator.manual_seed(rank_seed(self.config.seed, self.rank, 2, self.step))
            seed_everything(rank_seed(self.config.seed, self.rank, _GLOBAL_STREAM, self.step))
            if hasattr(augment, "manual_seed"):
                augment.manual_seed(rank_seed(self.config.seed, self.rank, 4, self.step))
        self.history = [dict(r) for r in state["history"]]
        self.best = dict(state["best"])
        self._collapse.collapse_streak = int(state["collapse_streak"])
        self._collapse.class_streak = int(state.get("class_streak", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.scaler_skipped = int(state.get("scaler_skipped", 0))
        self._scaler_skipped_pending.zero_()
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self._nonfinite.reset()
        self.last_step_ok = None
        # the saved run's eps (derived from its data, or given) when this trainer has none of
        # its own: a method instance's eps and the config's are kept
        own_eps = getattr(self.method, "eps", None) is not None and not self._eps_derived
        if not own_eps and state.get("eps") is not None and hasattr(self.method, "eps"):
            self.eps = float(state["eps"])
            self.method.eps = self.eps

    def _load_ema(self, saved: Mapping[str, Any] | None) -> None:
        """The saved average of the weights; a run saved without one starts it from the loaded weights."""
        if self.ema is None:
            if saved is not None:
                logger.info("torchvat: ema=None: the checkpoint's EMA weights are not continued")
            return
        if saved is None:
            self.ema.copy_from(self.model)
            logger.info("torchvat: the checkpoint has no EMA weights; the average starts from its weights")
        else:
            self.ema.load_state_dict(saved)

    def _keep_saved_regularize(self, saved_config: Mapping[str, Any]) -> None:
        """A ``regularize`` this trainer resolved from ``"auto"`` gives way to the saved run's.

        A run saved before ``"auto"`` was the default (or with another model) continues with the
        rows it was regularizing; an explicit ``regularize`` given to this trainer is kept, as
        every other hyperparameter is.
        """
        saved = saved_config.get("regularize")
        if not self._regularize_resolved or saved not in ("unlabeled", "all") or saved == self.config.regularize:
            return
        self.config = self.config.replace(regularize=saved)
        if getattr(self.method, "regularize", None) is not None:
            self.method.regularize = saved  # type: ignore[attr-defined]  # a method with a regularize option
        logger.info("torchvat: regularize=%r kept from the saved run", saved)

    def _apply_changed_hyperparameters(self, saved_config: Mapping[str, Any]) -> None:
        """Apply the config's ``lr``, ``weight_decay``, ``momentum``, ``nesterov`` after a loaded optimizer state.

        The loaded parameter groups hold the saved run's values; those that differ in the config
        are replaced. Every hyperparameter of a resumed run is the config's; its state is the
        checkpoint's.
        """
        cfg = self.config
        saved_lr = saved_config.get("lr")
        if saved_lr is not None and saved_lr != cfg.lr:
            if saved_lr > 0:
                self.schedule.base_lrs = [base * cfg.lr / saved_lr for base in self.schedule.base_lrs]
            else:  # saved with lr=0: base rates of 0 scale to nothing; take the new lr itself
                self.schedule.base_lrs = [cfg.lr for _ in self.schedule.base_lrs]
            self.schedule.apply(self.schedule.step)
        for group in self.optimizer.param_groups:
            if saved_config.get("weight_decay", cfg.weight_decay) != cfg.weight_decay:
                group["weight_decay"] = cfg.weight_decay
            if cfg.optimizer == "sgd":
                if saved_config.get("momentum", cfg.momentum) != cfg.momentum:
                    group["momentum"] = cfg.momentum
                group["nesterov"] = cfg.nesterov and group["momentum"] > 0
                if group["momentum"] > 0 and group.get("fused"):  # zero buffers, as build_optimizer makes
                    for p in group["params"]:
                        state = self.optimizer.state[p]
                        if "momentum_buffer" not in state:
                            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    # ------------------------------------------------ BatchNorm recalibration
    def _evaluated_module(self) -> nn.Module:
        """The plain module that evaluation runs: the EMA copy with ``config.ema``, else :attr:`model`."""
        return self.model if self.ema is None else self.ema.module

    def _check_recalibration(self) -> None:
        """``bn_recalibrate`` needs its split; on a model without BatchNorm statistics it does nothing (warned)."""
        split = self.config.bn_recalibrate
        if split is None:
            return
        if split == "unlabeled" and self.x_unlabeled is None:
            raise ValueError("bn_recalibrate='unlabeled' needs x_unlabeled, got None; use 'labeled' or None")
        if not batchnorm_layers(self.model):
            warnings.warn(
                f"bn_recalibrate={split!r}: the model has no BatchNorm layer with running statistics; "
                "there is nothing to re-estimate",
                UserWarning,
                stacklevel=3,
            )

    def recalibrated_statistics(self) -> dict[str, Tensor] | None:
        """The evaluated model's BatchNorm statistics re-estimated on ``config.bn_recalibrate``'s split.

        Computed once per iteration (at the first evaluation or prediction of that iteration) by
        :func:`~torchvat.train.recalibrate.recalibrate_batchnorm`: ``bn_recalibrate_batches``
        fixed batches of ``bn_recalibrate_batch_size`` rows (the same rows at every evaluation,
        drawn by a private generator seeded from ``config.seed``), passed in training mode with
        a cumulative average, with dropout masks from a private seed. Neither the batch streams
        nor the random generators of training are touched, and the model keeps its training
        statistics: :meth:`predict_logits` swaps these in and back. The batches are not
        augmented. In a distributed run every process computes them alike (the same rows, seed
        and weights: rank 0's buffers are broadcast before each evaluation), without
        communication (a ``SyncBatchNorm`` layer averages identical batch statistics).

        Returns:
            The statistics by ``state_dict`` key, or ``None`` with ``bn_recalibrate=None``.
        """
        cfg = self.config
        if cfg.bn_recalibrate is None:
            return None
        if self._recalibrated is not None and self._recalibrated[0] == self.step:
            return self._recalibrated[1]
        x = self.x_labeled if cfg.bn_recalibrate == "labeled" else self.x_unlabeled
        assert x is not None  # checked in the constructor
        rows = recalibration_batches(
            int(x.shape[0]), cfg.bn_recalibrate_batches, cfg.bn_recalibrate_batch_size, _seed_for(cfg.seed, 0, 5)
        )
        stats = recalibrate_batchnorm(
            self._evaluated_module(),
            (self._memory_format(x[idx.to(x.device)]) for idx in rows),
            seed=_seed_for(cfg.seed, 0, 6),
            context=self._autocast,
        )
        self._recalibrated = (self.step, stats)
        return stats


def _compiled(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """``torch.compile(model)`` with the options of ``cfg.compile``, or ``model`` itself."""
    options = cfg.compile_options()
    return model if options is None else torch.compile(model, **options)  # type: ignore[return-value]
