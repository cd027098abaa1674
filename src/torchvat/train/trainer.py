"""The semi-supervised trainer: one loop for every method.

Override points, from the inside out: :meth:`Trainer.next_batch` (the only place labeled
and unlabeled batches are paired), :meth:`Trainer.train_step` (one iteration),
:meth:`Trainer.evaluate`, :meth:`Trainer.fit` (the loop).
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from torchvat.core import RNGSnapshot
from torchvat.data.sampler import InfiniteBatchSampler
from torchvat.train.callbacks import Callback, Checkpoint, JSONLogger, ProgressBar, TensorBoardLogger
from torchvat.train.checkpoint import (
    check_output_dir,
    estimate_checkpoint_nbytes,
    get_rng_state,
    load_checkpoint,
    seed_everything,
    select_device,
    set_rng_state,
)
from torchvat.train.config import CUDAGRAPH_MODES, TrainConfig
from torchvat.train.defaults import derive_eps, resolve_regularize
from torchvat.train.distributed import (
    ShardedBatchSampler,
    all_reduce_mean,
    any_process,
    broadcast_buffers,
    init_distributed,
    launched_by_torchrun,
    planned_world,
    rank_seed,
    resolve_device,
    world_size,
    wrap_model,
)
from torchvat.train.finite import (
    BufferSnapshot,
    NonFiniteRecord,
    NonFiniteSummary,
    grad_finite_flags,
    supports_found_inf,
)
from torchvat.train.methods import Batch, CleanPass, Method, check_method_options, get_method
from torchvat.train.optim import IterationSchedule, build_optimizer, warmup_factor

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

_HPARAMS = ("eps", "xi", "alpha", "beta", "n_power", "norm", "probe", "regularize")


class CollapseWarning(UserWarning):
    """The held-out error rose while the training loss fell over consecutive evaluations."""


class NonFiniteLossError(FloatingPointError):
    """A training iteration produced a NaN/Inf loss or gradient (``nonfinite="stop"``).

    The message names the iteration and the loss terms; the update was not applied.

    Args:
        message: The description.
        iteration: The 1-based iteration that failed.
        terms: The value of every loss term at that iteration.
    """

    def __init__(self, message: str, iteration: int = 0, terms: Mapping[str, float] | None = None) -> None:
        super().__init__(message)
        self.iteration = iteration
        self.terms = dict(terms or {})


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


class _Accumulator:
    """Sums of per-iteration metrics kept on the device; synchronized only by :meth:`means`.

    Each metric is averaged over the iterations that returned it (a custom method may return
    a term on some iterations only). An iteration can be added with a device weight (0 for an
    iteration whose update was skipped, so its NaN terms do not reach the means) without
    reading it on the host.

    The counts live in groups of metrics that were returned together every time since the
    last reset, one device tensor per group: with the same metrics at every iteration (the
    built-in methods) an iteration costs one addition for the counts, as a single count would.
    """

    def __init__(self) -> None:
        self.reset()

    def add(self, metrics: Mapping[str, Tensor], ok: Tensor | None = None) -> None:
        if not metrics:
            self.count += 1
            return
        device = None
        for key, value in metrics.items():
            value = value.detach().float()
            device = value.device
            if ok is not None:
                value = torch.where(ok.to(value.device), value, torch.zeros_like(value))
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
        step: Tensor | float = 1.0 if ok is None else ok.float().to(device)
        present = frozenset(metrics)
        if len(self._groups) == 1 and present in self._groups:  # the same metrics as before
            self._groups[present] = self._groups[present] + step
            self.count += 1
            return
        groups: dict[frozenset[str], Tensor] = {}
        seen: set[str] = set()
        for members, weight in self._groups.items():
            inside = members & present
            if inside:
                groups[inside] = weight + step
            if len(inside) < len(members):
                groups[members - inside] = weight
            seen |= members
        fresh = present - seen
        if fresh:
            groups[frozenset(fresh)] = torch.zeros((), device=device) + step
        self._groups = groups
        self.count += 1

    def weights(self) -> dict[str, Tensor]:
        """Each metric's number (device float) of counted iterations since the reset."""
        return {key: weight for members, weight in self._groups.items() for key in members}

    def means(self) -> dict[str, float]:
        """Means since the last reset, averaged over the processes when distributed.

        Every process has the same keys and weights (same iterations, same per-process batch
        size, the same skipped iterations), so the mean of the per-process means is the mean
        over the global batches. A metric none of whose iterations counted (every one that
        returned it was skipped) is left out; empty when every iteration since the reset was.
        """
        if not self.sums:
            return {}
        keys = list(self.sums)
        weights = self.weights()
        device = self.sums[keys[0]].device
        sums = torch.stack([self.sums[k] for k in keys])
        counts = torch.stack([weights[k].to(device) for k in keys])
        values = all_reduce_mean(torch.cat([sums / counts.clamp_min(1), counts])).tolist()
        n = len(keys)
        return {k: v for k, v, c in zip(keys, values[:n], values[n:], strict=True) if c != 0}

    def reset(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self._groups: dict[frozenset[str], Tensor] = {}
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        weights = self.weights()
        return {
            "sums": {k: v.cpu() for k, v in self.sums.items()},
            "count": self.count,
            "weights": {k: weights[k].cpu() for k in self.sums},
        }

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        self.sums = {k: v.to(device) for k, v in state["sums"].items()}
        self.count = int(state["count"])
        weights = state.get("weights")
        if weights is None:  # written with one count for every metric
            weight = state.get("weight")
            if weight is None:  # written before weights existed: every iteration counted
                weight = torch.tensor(float(self.count))
            weights = {k: weight for k in self.sums}
        # metrics with equal counts share a group: the next iterations add to them alike
        by_value: dict[float, list[str]] = {}
        for key, weight in weights.items():
            by_value.setdefault(float(weight), []).append(key)
        self._groups = {frozenset(keys): weights[keys[0]].to(device) for keys in by_value.values()}


def _seed_for(seed: int, rank: int, stream: int) -> int:
    """Independent 63-bit seeds for the samplers and the method's generator."""
    return rank_seed(seed, rank, stream)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


_GLOBAL_STREAM = 3  # the per-rank seed of the global generators of ranks > 0


def _as_tensor(name: str, value: Any) -> Tensor | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")
    return value


def _check_batch_size(batch_size: Any) -> None:
    """A prediction batch size: an integer >= 1, or ``None`` for the config's."""
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")


def _check_logits(logits: Any, n_rows: int) -> None:
    """The model's output must be a tensor with one row per input row."""
    if not isinstance(logits, Tensor):
        raise TypeError(
            "the model must return a logits tensor [B, n_classes], got "
            f"{type(logits).__name__}; wrap a model that returns a dict, a tuple or a Hugging Face "
            "output in a module whose forward returns the logits (e.g. model(x).logits)"
        )
    if logits.ndim == 0 or logits.shape[0] != n_rows:
        raise ValueError(
            f"the model must return one row of logits per input row, got shape {tuple(logits.shape)} for {n_rows} rows"
        )


def effective_classes(probs: Tensor) -> Tensor:
    """``exp`` of the entropy of a class distribution: how many classes it spreads over.

    1 for a distribution on one class, ``K`` for the uniform one on ``K`` classes; the trainer
    computes it for the mean prediction on each unlabeled batch (metric ``unlabeled_classes``).

    Args:
        probs: Probabilities ``[K]`` (summing to 1).

    Returns:
        A scalar tensor in ``[1, K]``.

    Example:
        >>> round(float(effective_classes(torch.tensor([0.5, 0.5, 0.0]))), 4)
        2.0
    """
    return torch.special.entr(probs).sum().exp()


def compute_method_loss(
    model: nn.Module,
    method: Method,
    batch: Batch,
    weights: Mapping[str, float],
    *,
    generator: torch.Generator | None = None,
    on_clean: Callable[[CleanPass], None] | None = None,
) -> tuple[Tensor, dict[str, Tensor], CleanPass]:
    """The clean passes, the method's terms and their weighted sum for one batch (no backward).

    This is the forward half of :meth:`Trainer.train_step`, shared with the Lightning
    integration: the clean passes cover every row once (one joint pass, or labeled and
    unlabeled passes, as the method asks); the random state is captured before each so the
    method's probe and perturbed passes replay the same dropout masks.

    Args:
        model: The model to call (possibly compiled or DDP-wrapped), in training mode.
        method: The training method.
        batch: The batch, on the model's device.
        weights: Weight of each term (e.g. :meth:`Trainer.loss_weights`).
        generator: Generator for the method's random draws (random starts).
        on_clean: Called with the clean pass before the method's terms are computed (the
            trainer checks the labels against the number of outputs there).

    Returns:
        ``(loss, terms, clean)``: the weighted sum, the named terms and the clean pass.

    Raises:
        ValueError: If the method returns a term that has no weight.

    Example:
        >>> from torchvat.train import get_method
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
        >>> method = get_method("vat", eps=0.5)
        >>> batch = Batch(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), torch.randn(16, 2))
        >>> loss, terms, clean = compute_method_loss(model, method, batch, method.weights)
        >>> sorted(terms), clean.separate
        (['ce', 'vat'], True)
    """
    n_labeled = batch.x_labeled.shape[0]
    device = batch.x_labeled.device
    joint = batch.x_unlabeled is not None and method.joint_clean_pass
    x = torch.cat([batch.x_labeled, batch.x_unlabeled]) if joint else batch.x_labeled
    if method.needs_input_grad:
        x = x.detach().requires_grad_(True)

    # Clean passes: every row once. The generator state is captured before each pass so the
    # method's probe and perturbed passes replay the same dropout masks. A search's target
    # comes from a pass with the batch composition of its perturbed passes (BatchNorm).
    rng = RNGSnapshot.capture(device)
    logits = model(x)
    _check_logits(logits, x.shape[0])
    clean = CleanPass(x=x, logits=logits, n_labeled=n_labeled, rng=rng, generator=generator)
    if batch.x_unlabeled is not None and not joint:
        clean.unlabeled_rng = RNGSnapshot.capture(device)
        clean.unlabeled_x = batch.x_unlabeled
        with torch.set_grad_enabled(method.needs_unlabeled_grad):
            clean.unlabeled_logits = model(batch.x_unlabeled)
    if on_clean is not None:
        on_clean(clean)
    # the method's perturbation search and perturbed pass -> named loss terms
    terms = method.loss_terms(model, batch, clean)
    unknown = sorted(set(terms) - set(weights))
    if unknown:
        raise ValueError(
            f"method {method.name!r} returned terms {unknown} without a weight; its weights are {method.weights}"
        )
    loss: Tensor = sum(weights[name] * term for name, term in terms.items())  # type: ignore[assignment]
    return loss, terms, clean


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
            restored on resume; with ``manual_seed``, processes other than rank 0 reseed it on resume.
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
        tensors = {k: _as_tensor(k, v if v is not None else getattr(data, k, None)) for k, v in given.items()}
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

        self._check_dtypes(model, tensors)

        # everything on the device
        for key, value in tensors.items():
            setattr(self, key, None if value is None else value.to(self.device))
        self.model = model.to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        #: the DistributedDataParallel wrapper, made by :meth:`setup` in a distributed run
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        self.forward_model: nn.Module = _compiled(self.model, cfg)
        self._eval_model: nn.Module = self.forward_model
        # a torchrun environment (even of one process) gets its process group in setup(), as before
        self._process_group_ready = self.world_size == 1 and not launched_by_torchrun()
        #: the global generators are this run's: seeded by :meth:`setup` or restored by :meth:`load_state_dict`
        self._rng_ready = False
        # CUDA-graph modes: a training step calls the model several times before its backward,
        # so the trainer marks where a step begins (outputs of the previous step may be reused)
        self._mark_steps = cfg.compile in CUDAGRAPH_MODES
        self.optimizer = build_optimizer(self.model, cfg)
        self.schedule = IterationSchedule(self.optimizer, cfg)
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
        self._log_acc = _Accumulator()
        self._eval_acc = _Accumulator()
        self._collapse_streak = 0
        self._class_streak = 0
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
        self.initialized_process_group = init_distributed(self.device)
        if (world_size(), _rank()) != (self.world_size, self.rank):
            raise RuntimeError(
                f"the process group has {world_size()} processes and this is rank {_rank()}, but the trainer "
                f"was built for {self.world_size} processes at rank {self.rank} (from torchrun's environment)"
            )
        cfg = self.config
        if self.world_size > 1:
            # every training forward goes through the wrapper; see docs/distributed.md
            self.ddp = wrap_model(self.model, self.device, sync_batchnorm=cfg.sync_batchnorm)  # type: ignore[assignment]
            self.model = self.ddp.module
            self.forward_model = _compiled(self.ddp, cfg)
            self._eval_model = _compiled(self.model, cfg)
        self._process_group_ready = True

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

    @staticmethod
    def _check_data(t: dict[str, Tensor | None]) -> None:
        if t["x_labeled"] is None or t["y_labeled"] is None:
            raise ValueError("x_labeled and y_labeled are required, got None")
        for split in ("labeled", "val", "test"):
            x, y = t[f"x_{split}"], t[f"y_{split}"]
            if (x is None) != (y is None):
                raise ValueError(f"x_{split} and y_{split} must be given together, got only one")
            if x is None or y is None:
                continue
            if y.ndim != 1 or y.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
                raise ValueError(
                    f"y_{split} must be a 1-D integer tensor of class indices, "
                    f"got dtype {y.dtype} and shape {tuple(y.shape)}"
                )
            if x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"x_{split} and y_{split} must have the same number of rows, got {x.shape[0]} and {y.shape[0]}"
                )
            if y.numel() and int(y.min()) < 0:
                raise ValueError(
                    f"y_{split} must hold class indices >= 0, got {int(y.min())} "
                    "(unlabeled rows go in x_unlabeled, not in y with label -1)"
                )
            t[f"y_{split}"] = y.long()
        if t["x_labeled"].shape[0] == 0:
            raise ValueError("x_labeled must have at least one row, got 0")
        for split in ("labeled", "unlabeled", "val", "test"):
            x = t[f"x_{split}"]
            if x is not None and (x.is_floating_point() or x.is_complex()) and x.numel():
                bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
                if bool(bad.any()):
                    raise ValueError(
                        f"x_{split} must be finite, got NaN or Inf in {int(bad.sum())} row(s), "
                        f"the first at row {int(bad.nonzero()[0, 0])}"
                    )
        shape = tuple(t["x_labeled"].shape[1:])
        for split in ("unlabeled", "val", "test"):
            x = t[f"x_{split}"]
            if x is not None and tuple(x.shape[1:]) != shape:
                raise ValueError(f"x_{split} must have input shape {shape} like x_labeled, got {tuple(x.shape[1:])}")
        if t["x_unlabeled"] is not None and t["x_unlabeled"].shape[0] == 0:
            t["x_unlabeled"] = None

    def _check_dtypes(self, model: nn.Module, t: Mapping[str, Tensor | None]) -> None:
        """Every split's inputs are checked here, before training: not at the first evaluation.

        Inputs a method perturbs (``x_labeled``, ``x_unlabeled``) must be floating point, and
        every floating-point split (``x_labeled``, ``x_unlabeled``, ``x_val``, ``x_test``) must
        have the model's parameter dtype.
        """
        dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
        for split in ("labeled", "unlabeled", "val", "test"):
            name, x = f"x_{split}", t[f"x_{split}"]
            if x is None:
                continue
            if split in ("labeled", "unlabeled") and hasattr(self.method, "eps") and not x.is_floating_point():
                raise TypeError(
                    f"{name} must be a floating-point tensor for method {self.method.name!r} (it perturbs the "
                    f"inputs), got dtype {x.dtype}; for token ids, perturb the embeddings (torchvat.integrations.hf)"
                )
            if x.is_floating_point() and len(dtypes) == 1 and x.dtype not in dtypes:
                (dtype,) = dtypes
                raise TypeError(
                    f"{name} has dtype {x.dtype} but the model's parameters are {dtype}; "
                    f"convert the inputs ({name}.to({dtype})) or the model (model.to({x.dtype}))"
                )

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
        if self.method.uses_unlabeled and self.unlabeled_sampler is not None:
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
        ramp = warmup_factor(self.step, self.config.warmup_iters)
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
        :class:`NonFiniteLossError` (``"stop"``) immediately.

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
        buffers = BufferSnapshot(list(self.model.buffers()) if policy != "ignore" else [])
        try:
            with self._autocast():
                loss, terms, clean = compute_method_loss(
                    self.forward_model,
                    self.method,
                    batch,
                    self.loss_weights(),
                    generator=self.generator,
                    on_clean=None if self._labels_checked else self._check_labels,
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
        loss.backward()
        self.schedule.apply(self.step)
        self.last_step_ok = None
        if policy == "ignore":
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
                message = self._describe_nonfinite(summary)
                if policy == "stop":
                    raise NonFiniteLossError(message, self.step + 1, summary.terms if summary else {})
                self.skipped_steps += 1
                logger.warning("torchvat: %s; iteration skipped (nonfinite='skip')", message)
                return {}
            self.optimizer.step()

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
        message = self._describe_nonfinite(summary)
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

    def _describe_nonfinite(self, summary: NonFiniteSummary | None) -> str:
        if summary is None:  # another process failed; its terms are not known here
            return f"non-finite loss or gradients at iteration {self.step + 1} on another process"
        values = summary.terms
        shown = ", ".join(f"{name}={value:.6g}" for name, value in values.items())
        where = f"iteration {summary.first} (step {summary.first - 1} done)"
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad:
            return f"non-finite loss at {where}: loss term(s) {', '.join(map(repr, bad))} ({shown})"
        if not summary.loss_finite:
            return f"non-finite loss at {where}: the weighted sum of finite terms ({shown})"
        params = summary.bad_parameters
        limit = 5
        params = params[:limit] + ([f"... ({len(params) - limit} more)"] if len(params) > limit else [])
        names = ", ".join(params) if params else "on another process"
        return f"non-finite gradients at {where} with finite loss terms ({shown}): {names}"

    def _check_labels(self, clean: CleanPass) -> None:
        """Once per trainer, after the first clean pass: labels must be below the number of outputs."""
        self._labels_checked = True
        logits = clean.labeled_logits
        if logits.ndim != 2:
            return
        n = int(logits.shape[1])
        for split in ("labeled", "val", "test"):
            y = getattr(self, f"y_{split}")
            if y is None or y.is_floating_point() or y.numel() == 0:
                continue
            top = int(y.max())
            if top >= n:
                raise ValueError(
                    f"y_{split} must hold class indices in [0, {n}) (the model returns {n} logits), got {top}"
                )

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
        )
        self._call("on_train_end", result=result)
        result.paths = dict(self.paths)
        return result

    # ------------------------------------------------------------- evaluation
    def _evaluate_held_out(self) -> None:
        broadcast_buffers(self.model)  # rank 0's BatchNorm statistics on every process
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
        """Warn (:class:`CollapseWarning`) about the two ways a regularizer collapses.

        Over ``config.collapse_patience`` consecutive evaluations: the held-out error rose
        while the training loss fell; or the predictions on the unlabeled batches spread over
        fewer than ``1 + (L - 1) / 2`` classes (``unlabeled_classes``, the exponential of the
        entropy of the mean prediction), ``L`` being that number for the labels: the model
        puts most unlabeled data into a few classes, where the divergence is small. The
        second check needs no held-out data.
        """
        patience = self.config.collapse_patience
        if patience == 0 or not self.history:
            return
        cur = self.history[-1]
        seen = cur.get("train_unlabeled_classes")
        floor = 1.0 + ((self.labeled_classes or 1.0) - 1.0) / 2.0
        if seen is not None and math.isfinite(seen) and seen < floor:
            self._class_streak += 1
        else:
            self._class_streak = 0
        if self._class_streak == patience:
            message = (
                f"the predictions on the unlabeled data spread over {seen:.3g} classes (exp of the entropy "
                f"of the mean prediction) against {self.labeled_classes:.3g} for the labels, over "
                f"{patience} consecutive evaluations (step {self.step}): the regularizer may be collapsing "
                "the unlabeled data into a few classes (try a larger eps, a smaller alpha or learning "
                "rate, more labels per batch, or method='vat+ent')"
            )
            logger.warning("torchvat: %s", message)
            warnings.warn(message, CollapseWarning, stacklevel=3)
        if monitor is None or len(self.history) < 2:
            return
        prev = self.history[-2]
        if cur[monitor] > prev[monitor] and cur.get("train_loss", math.inf) < prev.get("train_loss", -math.inf):
            self._collapse_streak += 1
        else:
            self._collapse_streak = 0
        if self._collapse_streak == patience:
            message = (
                f"{monitor} rose while the training loss fell over {patience} consecutive "
                f"evaluations (step {self.step}: {monitor}={cur[monitor]:.4g}, "
                f"train_loss={cur['train_loss']:.4g}); the regularizer may be collapsing "
                "(check eps, alpha and the learning rate)"
            )
            logger.warning("torchvat: %s", message)
            warnings.warn(message, CollapseWarning, stacklevel=3)

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
        x = _as_tensor("x", x)
        _check_batch_size(batch_size)
        bs = self.config.eval_batch_size if batch_size is None else int(batch_size)
        was_training = self.model.training
        self.model.eval()
        try:
            outs = []
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
        x, y = _as_tensor("x", x), _as_tensor("y", y)
        _check_batch_size(batch_size)  # on every process, also one whose share of the rows is empty
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
        plain containers (loadable with ``weights_only=True``).

        Iterations skipped on the device are reported first (:meth:`check_nonfinite`), so a
        saved state never hides a pending failure.

        Returns:
            The state.

        Raises:
            NonFiniteLossError: With ``nonfinite="stop"`` after a non-finite iteration.
        """
        self.check_nonfinite()
        return {
            "format": 1,
            "step": self.step,
            "world_size": self.world_size,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": get_rng_state(self.device),
            "generator": self.generator.get_state(),
            "augment": self.augment.state_dict() if hasattr(self.augment, "state_dict") else None,
            "samplers": {
                "labeled": self.labeled_sampler.state_dict(),
                "unlabeled": None if self.unlabeled_sampler is None else self.unlabeled_sampler.state_dict(),
            },
            "history": [dict(r) for r in self.history],
            "best": dict(self.best),
            "accumulators": {"log": self._log_acc.state_dict(), "eval": self._eval_acc.state_dict()},
            "collapse_streak": self._collapse_streak,
            "class_streak": self._class_streak,
            "skipped_steps": self.skipped_steps,
            "method": self.method.name,
            "eps": self.eps,
            "config": self.config.to_dict(),
        }

    def _sampler_state(self, saved: Mapping[str, Any], saved_world: int) -> dict[str, Any]:
        """A sampler state written with another number of processes, for this trainer's stream.

        The stream's position (epoch, position in the epoch's permutation) does not depend on
        the batch size; with another world size the global batch size changes, so the saved
        one is replaced (the per-process batch size of the config is what is kept).
        """
        state = dict(saved)
        if saved_world != self.world_size:
            state["batch_size"] = int(state["batch_size"]) // saved_world * self.world_size
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (e.g. a loaded checkpoint).

        A checkpoint written by a run with another number of processes continues with the
        same per-process batch sizes: the global data stream goes on from the saved position
        with the new global batch size. In a distributed run, every process loads the file
        (rank 0's state) and processes other than rank 0 reseed their random generators from
        ``(seed, rank, step)``, so a resumed distributed run is a valid continuation but not
        bit-identical to an uninterrupted one on those processes.

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
        self._check_state(state)
        saved_config = state.get("config") or {}
        saved_world = int(state.get("world_size", 1))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self._apply_changed_hyperparameters(saved_config)
        self._keep_saved_regularize(saved_config)
        self.labeled_sampler.load_state_dict(self._sampler_state(state["samplers"]["labeled"], saved_world))
        saved_u = state["samplers"]["unlabeled"]
        if saved_u is not None and self.unlabeled_sampler is not None:
            self.unlabeled_sampler.load_state_dict(self._sampler_state(saved_u, saved_world))
        self.generator.set_state(state["generator"])
        set_rng_state(state["rng"], self.device)
        self._rng_ready = True  # the saved run's generators: setup() does not reseed them
        self.step = int(state["step"])
        saved_augment = state.get("augment")
        if saved_augment is not None and hasattr(self.augment, "load_state_dict"):
            self.augment.load_state_dict(saved_augment)
        if self.rank > 0:  # the file holds rank 0's random state: derive this process's own
            self.generator.manual_seed(rank_seed(self.config.seed, self.rank, 2, self.step))
            seed_everything(rank_seed(self.config.seed, self.rank, _GLOBAL_STREAM, self.step))
            if hasattr(self.augment, "manual_seed"):
                self.augment.manual_seed(rank_seed(self.config.seed, self.rank, 4, self.step))
        self.history = [dict(r) for r in state["history"]]
        self.best = dict(state["best"])
        self._log_acc.load_state_dict(state["accumulators"]["log"], self.device)
        self._eval_acc.load_state_dict(state["accumulators"]["eval"], self.device)
        self._collapse_streak = int(state["collapse_streak"])
        self._class_streak = int(state.get("class_streak", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self._nonfinite.reset()
        self.last_step_ok = None
        # the saved run's eps (derived from its data, or given) when this trainer has none of
        # its own: a method instance's eps and the config's are kept
        own_eps = getattr(self.method, "eps", None) is not None and not self._eps_derived
        if not own_eps and state.get("eps") is not None and hasattr(self.method, "eps"):
            self.eps = float(state["eps"])
            self.method.eps = self.eps

    def _check_state(self, state: Mapping[str, Any]) -> None:
        """Every check of :meth:`load_state_dict`, made before it changes anything."""
        if state.get("method") != self.method.name:
            raise ValueError(
                f"checkpoint was written by method {state.get('method')!r}, but this trainer runs {self.method.name!r}"
            )
        required = ("step", "model", "optimizer", "schedule", "rng", "generator", "samplers", "history", "best")
        missing = [k for k in (*required, "accumulators", "collapse_streak") if k not in state]
        if missing:
            raise ValueError(f"checkpoint is not a trainer state (Trainer.state_dict()): it has no {missing}")
        saved_config = state.get("config") or {}
        for name in ("optimizer", "batch_size", "unlabeled_batch_size"):  # the saved state needs them
            if name in saved_config and saved_config[name] != getattr(self.config, name):
                raise ValueError(
                    f"checkpoint was written with {name}={saved_config[name]!r}, but this trainer has "
                    f"{name}={getattr(self.config, name)!r}; a resumed run keeps the saved {name} "
                    "(its optimizer state and data streams depend on it): use the saved value or start a new run"
                )
        saved_world = int(state.get("world_size", 1))
        samplers = state["samplers"]
        for split, sampler in (("labeled", self.labeled_sampler), ("unlabeled", self.unlabeled_sampler)):
            saved = samplers.get(split)
            x = getattr(self, f"x_{split}")
            have = f"x_{split} has {int(x.shape[0])}" if x is not None else f"x_{split} is None or empty"
            if saved is None and x is None:
                continue
            if saved is None or x is None or int(saved["n"]) != int(x.shape[0]):
                rows = "no" if saved is None else int(saved["n"])
                raise ValueError(
                    f"checkpoint has {rows} {split} rows, {have}; a resumed run needs the data it was saved "
                    "with (its data streams index them): pass the same data or start a new run"
                )
            sampler.check_state_dict(self._sampler_state(saved, saved_world))  # type: ignore[union-attr]
        self._check_saved_model(state["model"])
        saved_groups = state["optimizer"].get("param_groups", [])
        sizes = [len(g["params"]) for g in saved_groups]
        own_sizes = [len(g["params"]) for g in self.optimizer.param_groups]
        if sizes != own_sizes:
            raise ValueError(
                f"checkpoint's optimizer has parameter groups of {sizes} parameters, but this trainer's optimizer "
                f"has {own_sizes}"
            )

    def _check_saved_model(self, saved: Mapping[str, Any]) -> None:
        """The saved weights fit :attr:`model`: the same names and shapes (as ``load_state_dict`` strictly needs)."""
        own = self.model.state_dict()
        problems = []
        missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
        if missing:
            problems.append(f"the checkpoint lacks {missing[:5]}" + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            problems.append(f"the model has no {unexpected[:5]}" + (" ..." if len(unexpected) > 5 else ""))
        for key, value in own.items():
            shape, saved_shape = getattr(value, "shape", None), getattr(saved.get(key), "shape", None)
            if key in saved and shape is not None and saved_shape is not None and tuple(shape) != tuple(saved_shape):
                problems.append(f"{key!r} has shape {tuple(saved_shape)} in the checkpoint, {tuple(shape)} here")
                break
        if problems:
            raise ValueError(f"checkpoint's model does not fit this trainer's model: {'; '.join(problems)}")

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


def _compiled(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """``torch.compile(model)`` with the options of ``cfg.compile``, or ``model`` itself."""
    options = cfg.compile_options()
    return model if options is None else torch.compile(model, **options)  # type: ignore[return-value]
