"""The trainer's configuration: one dataclass holding every option with its default."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from torchvat import params
from torchvat.train.defaults import DEFAULT_DIST_TIMEOUT, DEFAULT_LABELED_STATS, DEFAULT_REGULARIZE

__all__ = ["TrainConfig"]

#: valid values of the choice options (aliases of :mod:`torchvat.params`, their one declaration)
OPTIMIZERS = params.choices("optimizer")
SCHEDULES = params.choices("schedule")
REGULARIZE = params.choices("regularize")
NORMS = params.choices("norm")
PROBES = params.choices("probe")
AMP = params.choices("amp")
NONFINITE = params.choices("nonfinite")
#: ``torch.compile`` modes accepted by ``TrainConfig.compile`` (its string choices)
COMPILE_MODES = tuple(v for v in params.choices("compile") if isinstance(v, str))
#: the modes among them that run the compiled model through CUDA graphs
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")
_BOOL = params.Boolean()
#: the fields whose valid values :data:`torchvat.params.PARAMS` declares
_DECLARED = tuple(
    f
    for f in (
        "eps",
        "xi",
        "alpha",
        "beta",
        "n_power",
        "norm",
        "probe",
        "regularize",
        "labeled_stats",
        "iterations",
        "batch_size",
        "unlabeled_batch_size",
        "optimizer",
        "lr",
        "beta1",
        "decay_beta1",
        "momentum",
        "nesterov",
        "weight_decay",
        "schedule",
        "decay_fraction",
        "warmup_iters",
        "eval_every",
        "eval_batch_size",
        "log_every",
        "checkpoint_every",
        "collapse_patience",
        "nonfinite",
        "seed",
        "dist_timeout",
        "amp",
        "compile",
        "ema",
        "lr_decay",
        "lr_decay_every",
        "cosine_fraction",
        "warmup_shape",
        "bn_recalibrate",
        "bn_recalibrate_batches",
        "bn_recalibrate_batch_size",
        "kl_direction",
    )
)


@dataclass
class TrainConfig:
    """Every option of :class:`~torchvat.train.Trainer`.

    The optimization defaults are the VAT papers' (Adam 1e-3, batches of 32 labeled and 128
    unlabeled rows, one power iteration, ``alpha = 1``); three are torchvat's own, each documented
    with its measurements: ``eps=None`` (derived from the data), ``xi="auto"`` (scaled to the
    input and the precision, where the paper's absolute 1e-6 underflows in float32) and
    ``probe="auto"``.

    Training counts iterations, as the papers do: each iteration draws one labeled batch of
    ``batch_size`` rows and (for methods that use unlabeled data) one unlabeled batch of
    ``unlabeled_batch_size`` rows; both sizes are per process.

    Args:
        method: Training method, a name from :func:`~torchvat.train.available_methods`
            (``"supervised"``, ``"rpt"``, ``"at"``, ``"vat"``, ``"vat+ent"``, ``"at+vat"``, or
            one added with :func:`~torchvat.train.register_method`).
        eps: Perturbation size. ``None`` derives it from the data with
            :func:`torchvat.suggest_eps` (``rule="labeled"``: 0.75 x the median distance from
            an unlabeled point to its nearest labeled point; the choice is logged and returned
            in the result).
        xi: Finite-difference step of the power iteration, or ``"auto"`` (core's default).
        alpha: Weight of the VAT / AT term (the papers use 1).
        beta: Weight of the entropy term of ``"vat+ent"`` and of the robust KL term of ``"trades"``;
            ``None`` (default): the method's own default (1 for ``"vat+ent"``, 6 for ``"trades"``,
            Zhang et al. 2019).
        n_power: Power iterations of the VAT search (``"rpt"`` always uses 0).
        norm: ``"l2"`` or ``"linf"`` constraint on the perturbation.
        probe: ``"auto"`` (finite differences in float32/float64, the exact Gauss-Newton product
            under bf16/fp16 and in TF32 on CUDA), ``"finite_difference"`` (the papers) or
            ``"exact"``.
        regularize: Rows the VAT / entropy terms apply to: ``"unlabeled"`` (a clean pass of
            the labeled batch and one of the unlabeled batch), ``"all"`` (one joint clean pass
            over the labeled and unlabeled rows, every row regularized) or ``"auto"`` (opt-in:
            ``"all"`` for a model with BatchNorm layers, ``"unlabeled"`` otherwise; see
            :func:`torchvat.train.defaults.resolve_regularize`). The trainer resolves ``"auto"``
            once, in its constructor, and records the resolved value in its config, results and
            checkpoints. The default is ``"unlabeled"``
            (:data:`torchvat.train.defaults.DEFAULT_REGULARIZE`): "auto" removes the BatchNorm
            collapse of separate passes with 50 labels on digits but collapses on Fashion-MNIST
            with 100 labels (BENCHMARKS.md §6), so neither rule is the default for every data set yet.
        labeled_stats: With separate clean passes and BatchNorm, the statistics the labeled rows
            are normalized with: ``"own"`` (their own batch's; the running statistics follow the
            labeled passes, as in the VAT authors' code) or ``"unlabeled"`` (the unlabeled batch's,
            and the running statistics follow the unlabeled passes: the cross entropy, the VAT
            term and evaluation see one network; :mod:`torchvat.train.batch_statistics`).
            ``SyncBatchNorm`` layers keep ``"own"``.
        iterations: Number of training iterations (optimizer steps).
        batch_size: Labeled rows per iteration and process.
        unlabeled_batch_size: Unlabeled rows per iteration and process.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum, optionally Nesterov).
        lr: Initial learning rate.
        beta1: Adam's first-moment coefficient before the decay phase.
        decay_beta1: Adam's ``beta1`` during the decay phase (``"paper"`` schedule).
        momentum: SGD momentum.
        nesterov: Whether SGD uses Nesterov momentum.
        weight_decay: L2 weight decay of the optimizer.
        schedule: ``"paper"`` (constant, then over the last ``decay_fraction`` of the
            iterations the learning rate falls linearly to 0 and ``beta1`` becomes
            ``decay_beta1``, as in the authors' code), ``"cosine"`` (see ``cosine_fraction``),
            ``"constant"`` or ``"step"`` (``lr_decay`` every ``lr_decay_every`` iterations).
        decay_fraction: Fraction of the iterations in the decay phase of ``"paper"``.
        warmup_iters: Iterations over which the regularizer weights ramp up from 0 (0: no
            warm-up; the ramp's shape is ``warmup_shape``).
        eval_every: Evaluate on the held-out data every this many iterations (and at the end).
        eval_batch_size: Rows per forward pass during evaluation and prediction.
        log_every: Synchronize and log training metrics every this many iterations.
        checkpoint_every: Write ``last.pt`` every this many iterations (``None``: at every
            evaluation). Needs ``out_dir``.
        collapse_patience: Warn when, over this many consecutive evaluations, the held-out
            error rose while the training loss fell, or the predictions on the unlabeled
            batches spread over fewer than half the labels' classes (metric
            ``unlabeled_classes``); 0 disables both checks.
        nonfinite: What an iteration whose loss or gradients are NaN/Inf does: ``"stop"``
            (the default: the update is not applied, the final checkpoint is written and
            ``fit`` raises a ``NonFiniteLossError`` naming the iteration and the term),
            ``"skip"`` (the update is not applied, a warning names the iteration and the
            term, training goes on) or ``"ignore"`` (no check, NaN weights possible). The
            check runs on the device; failures are reported at the next logging,
            evaluation or checkpoint iteration (see ``Trainer.train_step``).
        catch_signals: Whether ``fit`` turns the first SIGINT/SIGTERM into a clean stop after
            the current iteration (the final checkpoint is written and a message says how to
            resume); a second signal acts as usual. Main thread only.
        seed: Seed of every random number generator; the same seed gives the same run.
        device: ``"auto"`` (CUDA, then MPS, then CPU) or a device string.
        amp: ``None``, ``"bf16"`` (``torch.autocast`` with bfloat16 on the training device) or
            ``"fp16"`` (autocast with float16 and a ``torch.amp.GradScaler``: the loss is scaled
            before the backward pass, the steps the scaler skips while it finds its scale are
            counted in ``scaler_skipped`` and are not non-finite failures; for GPUs without
            bfloat16).
        compile: Whether to train through ``torch.compile(model)``: ``False``, ``True`` (the
            default mode) or a mode name: ``"default"``, ``"reduce-overhead"`` (CUDA graphs,
            for small batches whose GPU step is bound by kernel launches), ``"max-autotune"``
            or ``"max-autotune-no-cudagraphs"``.
        channels_last: Whether to keep the model's 4-D weights and every 4-D input batch in the
            ``torch.channels_last`` memory format (faster convolutions on GPUs with tensor
            cores, especially under bf16 autocast; the numbers are those of the default format
            up to rounding).
        out_dir: Directory for ``metrics.jsonl`` and checkpoints (``None``: write nothing).
        progress: Whether to show a progress bar (only on a terminal).
        tensorboard: Whether to log to TensorBoard in ``out_dir/tensorboard``.
        sync_batchnorm: In a distributed run, replace the model's BatchNorm layers by
            ``torch.nn.SyncBatchNorm`` (statistics over the global batch; CUDA only). Ignored
            in a single process.
        dist_timeout: In a distributed run, seconds a collective operation waits for the other
            processes before it fails and the process exits naming the silent rank (default 1800:
            room for the work rank 0 does alone, such as a checkpoint on a slow shared file system).
            Ignored in a single process and when the process group was initialized before.
        extra: More keyword arguments for the method's factory (options of methods added with
            :func:`~torchvat.train.register_method`).
        ema: Decay of an exponential moving average of the weights (for example 0.999, as USB /
            TorchSSL), or ``None`` (the default: none). With a decay, evaluation, the reported
            metrics and ``best.pt`` use the averaged weights; checkpoints hold both (see
            :class:`~torchvat.train.ema.WeightEMA`).
        lr_decay: Factor of the ``"step"`` schedule: the learning rate is multiplied by it every
            ``lr_decay_every`` iterations, ``lr * lr_decay ** (t // lr_decay_every)`` (0.9 every 500:
            the ICLR 2016 MNIST code; 0.2 every 400000: Oliver et al. 2018's staircase).
        lr_decay_every: Iterations between two decays of the ``"step"`` schedule (``None``: not set;
            the ``"step"`` schedule needs it).
        cosine_fraction: The ``"cosine"`` schedule's curve: ``None`` (the default) gives
            ``lr * (1 + cos(pi t / T)) / 2``, from ``lr`` to 0 over half a period of the cosine; a
            number ``f`` in ``(0, 0.5]`` gives ``lr * cos(pi f t / T)``, the first ``f`` of a half
            period, which ends at ``lr * cos(pi f)`` (USB / TorchSSL's ``num_cycles``: ``f = 7/16``,
            ending at 0.195 ``lr``; 0.5 ends at 0).
        warmup_shape: Shape of the regularizer weights' ramp over ``warmup_iters``: ``"linear"``
            (``(t + 1) / warmup_iters``) or ``"sigmoid"`` (``exp(-5 (1 - t / warmup_iters)^2)``, the
            Mean Teacher ramp that Oliver et al. 2018 use); 1 from ``warmup_iters`` on.
        bn_recalibrate: Re-estimate the BatchNorm statistics of the evaluated model (the EMA weights
            with ``ema``) before each evaluation, as the VAT authors do before testing: ``None`` (the
            default: the running averages kept in training), ``"labeled"`` or ``"unlabeled"`` (the
            split whose rows are passed, in training mode, with a cumulative average); the training
            statistics are put back after, so training is unchanged (see
            :mod:`torchvat.train.recalibrate`).
        bn_recalibrate_batches: Batches passed by ``bn_recalibrate`` (100: vat_tf ``test.py``), or
            ``None``: one pass over the whole split (the ICLR 2016 code).
        bn_recalibrate_batch_size: Rows per batch of ``bn_recalibrate`` (100: vat_tf ``test.py``).
        kl_direction: Order of the VAT family's divergence: ``"clean-perturbed"`` (the default and
            the VAT papers': ``KL(p(x) || p(x + r))``) or ``"perturbed-clean"`` (``KL(p(x + r) || p(x))``,
            Oliver et al. 2018's code; see :func:`torchvat.core.divergence.reversed_divergence`).

    Raises:
        ValueError: If an option has an invalid value; the message names the field, the
            expected and the received value.

    Example:
        >>> cfg = TrainConfig(method="vat", eps=2.0, iterations=100)
        >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
        True
        >>> TrainConfig(batch_size=0)
        Traceback (most recent call last):
        ...
        ValueError: batch_size must be an integer >= 1, got 0
    """

    method: str = "vat"
    eps: float | None = None
    xi: float | str = "auto"
    alpha: float = 1.0
    beta: float | None = None
    n_power: int = 1
    norm: str = "l2"
    probe: str = "auto"
    regularize: str = DEFAULT_REGULARIZE
    labeled_stats: str = DEFAULT_LABELED_STATS
    iterations: int = 10_000
    batch_size: int = 32
    unlabeled_batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    beta1: float = 0.9
    decay_beta1: float = 0.5
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    schedule: str = "paper"
    decay_fraction: float = 1 / 3
    warmup_iters: int = 0
    eval_every: int = 500
    eval_batch_size: int = 1000
    log_every: int = 50
    checkpoint_every: int | None = None
    collapse_patience: int = 3
    nonfinite: str = "stop"
    catch_signals: bool = True
    seed: int = 0
    device: str = "auto"
    amp: str | None = None
    compile: bool | str = False
    channels_last: bool = False
    out_dir: str | None = None
    progress: bool = True
    tensorboard: bool = False
    sync_batchnorm: bool = False
    dist_timeout: float = DEFAULT_DIST_TIMEOUT
    extra: dict[str, Any] = field(default_factory=dict)
    ema: float | None = None
    lr_decay: float = 0.1
    lr_decay_every: int | None = None
    cosine_fraction: float | None = None
    warmup_shape: str = "linear"
    bn_recalibrate: str | None = None
    bn_recalibrate_batches: int | None = 100
    bn_recalibrate_batch_size: int = 100
    kl_direction: str = "clean-perturbed"

    def __post_init__(self) -> None:
        # the types the rest of the API takes for these: a path-like folder, a torch.device
        if isinstance(self.out_dir, os.PathLike):
            self.out_dir = os.fspath(self.out_dir)
        if type(self.device).__name__ == "device" and type(self.device).__module__ == "torch":
            self.device = str(self.device)
        self.validate()

    def validate(self) -> None:
        """Check every field.

        The method name is checked against the registry by the trainer (a method may be
        registered after the config is built).

        Raises:
            ValueError: If a field has an invalid value.
        """
        if not isinstance(self.method, str) or not self.method:
            raise ValueError(f"method must be a non-empty string, got {self.method!r}")
        for name in _DECLARED:
            params.check(name, getattr(self, name))
        if self.schedule == "step" and self.lr_decay_every is None:
            raise ValueError("lr_decay_every must be an integer >= 1 with schedule='step', got None")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device must be 'auto' or a device string, got {self.device!r}")
        for name in ("channels_last", "progress", "tensorboard", "sync_batchnorm", "catch_signals"):
            _BOOL.check(name, getattr(self, name))
        if self.out_dir is not None and not isinstance(self.out_dir, str):
            raise ValueError(f"out_dir must be a string path or None, got {self.out_dir!r}")
        if not isinstance(self.extra, dict):
            raise ValueError(f"extra must be a dict, got {type(self.extra).__name__}")

    def compile_options(self) -> dict[str, Any] | None:
        """Keyword arguments of ``torch.compile`` for :attr:`compile` (``None``: no compilation).

        Example:
            >>> TrainConfig(compile="reduce-overhead").compile_options()
            {'mode': 'reduce-overhead'}
            >>> TrainConfig(compile=True).compile_options(), TrainConfig().compile_options()
            ({}, None)
        """
        if self.compile is False:
            return None
        return {} if self.compile is True else {"mode": self.compile}

    def to_dict(self) -> dict[str, Any]:
        """Return the options as a plain dict (JSON- and ``weights_only``-checkpoint-safe).

        Returns:
            A new dict mapping field names to values.
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a dict such as :meth:`to_dict` returns.

        Args:
            values: Field names to values; missing fields keep their defaults.

        Returns:
            The validated config.

        Raises:
            ValueError: If a key is not a field or a value is invalid.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; expected some of {sorted(names)}")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        """Return a validated copy with some fields changed.

        Args:
            **changes: New field values.

        Returns:
            The new config.

        Raises:
            ValueError: If a key is not a field or a value is invalid.
        """
        values = self.to_dict()
        values.update(changes)
        return self.from_dict(values)
