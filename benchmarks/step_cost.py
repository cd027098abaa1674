"""Cost of one training step: supervised, the seed article's VAT, and torchvat's trainer methods.

Every step type starts from the same weights (a deep copy each), sees the same labeled and
unlabeled batches, and is timed in interleaved repetitions (round robin over the step types, the
starting type rotating each repetition) in one process, so load changes on a shared machine hit all
step types alike. ``n_power = 1`` everywhere.

Step types:

* ``supervised``: one forward pass over ``cat([x_l, x_u])``, cross entropy on the labeled rows, one
  backward (through the whole batch), one optimizer step: the cost of processing the same samples once.
* ``seed-vat``: the seed article's step (:mod:`_seed_vat`): labeled forward, clean no-grad forward on
  ``x_u``, a probe forward and a full backward (parameter gradients included), the perturbed forward,
  one backward, one optimizer step (PyTorch's default Adam, as the seed uses).
* ``torchvat-vat``: the trainer's ``"vat"`` method (``probe="finite_difference"``) through
  :func:`method_step`: :func:`torchvat.train.compute_method_loss` on the trainer's model, method
  and generator (a labeled clean pass with gradients, a no-grad unlabeled clean pass, the VAT
  target, its random state captured; the probe with input gradients only; the perturbed pass),
  one backward, one step of the trainer's optimizer (fused Adam).
* ``torchvat-vat-exact``: ``torchvat-vat`` with ``probe="exact"`` (Gauss-Newton product, forward-mode AD).
* ``torchvat-at``: the trainer's ``"at"`` method: adversarial training on the labeled rows (no
  unlabeled batch), the input gradient taken through the clean pass's graph.
* ``torchvat-vat+ent``: the trainer's ``"vat+ent"`` method: ``torchvat-vat`` plus the entropy of the
  unlabeled clean predictions (that pass then keeps its graph).
* ``torchvat-vat-train-step``: :meth:`torchvat.train.Trainer.train_step` of the ``"vat"`` method:
  ``torchvat-vat`` plus the trainer's per-step extras (non-finite check, metrics).
* ``torchvat-vat-compiled`` (``--compile [MODE]``): ``torchvat-vat`` with the trainer's
  ``compile=MODE`` (``torch.compile`` of the model), and ``seed-vat-compiled``: ``seed-vat`` on
  ``torch.compile(model, mode=MODE)``.

Reported per step type: median and minimum wall time, ratio to ``supervised``, the bound on that
ratio from counting passes (forward-equivalents per row, see :data:`PASS_MODEL`), forward and
backward passes through the network (counted with hooks in a separate, untimed step), FLOPs
(the formulas of ``torch.utils.flop_counter``) and the FLOP-bound time at the peak matmul rate
measured in the same process, the ATen operators dispatched (on a GPU, nearly one kernel launch
each: what a launch-bound step's time follows), samples per second (labeled plus unlabeled rows;
labeled only for ``torchvat-at``), and peak memory of one step (GPU: ``torch.cuda.max_memory_allocated``
above the memory allocated before the step; CPU: the peak resident set size above the resident set size
before the first step, in a fresh subprocess per step type, the peak mark reset through
``/proc/self/clear_refs`` on Linux).

Run ``python benchmarks/step_cost.py --help``; ``--quick`` is a seconds-long smoke run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _seed_vat import SeedVATLoss, seed_vat_step

from torchvat.core import RNGSnapshot
from torchvat.models import MLP, build_model
from torchvat.train import Batch, Trainer, compute_method_loss
from torchvat.train.config import COMPILE_MODES, CUDAGRAPH_MODES

STEP_TYPES = (
    "supervised",
    "seed-vat",
    "torchvat-vat",
    "torchvat-vat-exact",
    "torchvat-at",
    "torchvat-vat+ent",
    "torchvat-vat-train-step",
)
TRAIN_STEP = "torchvat-vat-train-step"
COMPILED = "torchvat-vat-compiled"
SEED_COMPILED = "seed-vat-compiled"
COMPILED_STEPS = (COMPILED, SEED_COMPILED)
MODELS = ("mlp", "conv-large", "wrn-28-2", "tiny-mlp")

#: the trainer's method and options behind each torchvat step type
TRAINER_STEPS: dict[str, tuple[str, dict[str, Any]]] = {
    "torchvat-vat": ("vat", {"probe": "finite_difference"}),
    "torchvat-vat-exact": ("vat", {"probe": "exact"}),
    "torchvat-at": ("at", {}),
    "torchvat-vat+ent": ("vat+ent", {"probe": "finite_difference"}),
    "torchvat-vat-train-step": ("vat", {"probe": "finite_difference"}),
    COMPILED: ("vat", {"probe": "finite_difference", "compile": True}),
}

#: forward-equivalents (one forward pass of one row = 1, its backward with parameter and input
#: gradients = 2, an input-only backward = 1, a forward-mode tangent = 1) per labeled row and per
#: unlabeled row. Seed VAT per unlabeled row: clean 1 + probe 1 + full probe backward 2 + perturbed
#: 1 + backward 2 = 7; an input-only probe saves 1 (6); the exact probe's tangent adds 1 (7); the
#: entropy term backpropagates the clean unlabeled pass (+2: 8). AT on the labeled rows: clean 1 +
#: input gradient 1 + perturbed 1 + two backwards 4 = 7, and no unlabeled rows.
PASS_MODEL: dict[str, tuple[int, int]] = {
    "supervised": (3, 3),
    "seed-vat": (3, 7),
    "torchvat-vat": (3, 6),
    "torchvat-vat-exact": (3, 7),
    "torchvat-at": (7, 0),
    "torchvat-vat+ent": (3, 8),
    "torchvat-vat-train-step": (3, 6),
    COMPILED: (3, 6),
    SEED_COMPILED: (3, 7),
}


def pass_bound(name: str, n_labeled: int, n_unlabeled: int) -> float:
    """The ratio of ``name``'s forward-equivalents to the supervised step's (see :data:`PASS_MODEL`)."""
    a, b = PASS_MODEL[name]
    sa, sb = PASS_MODEL["supervised"]
    return (a * n_labeled + b * n_unlabeled) / (sa * n_labeled + sb * n_unlabeled)


@dataclass
class StepConfig:
    """Hyperparameters shared by the step types."""

    eps: float = 1.0
    seed_xi: float = 10.0
    alpha: float = 1.0
    beta: float = 1.0
    amp: bool = False
    fused_adam: bool = False
    channels_last: bool = False
    compile_mode: str = "default"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def autocast(self) -> AbstractContextManager[Any]:
        """Autocast to bfloat16 around the forward passes when ``amp`` is on."""
        if not self.amp:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


Batches = tuple[Tensor, Tensor, Tensor]


@dataclass
class Step:
    """One step type, ready to run: ``run()`` makes one training step of ``model`` and returns the loss."""

    name: str
    model: nn.Module
    run: Callable[[], Tensor]


# --------------------------------------------------------------------------------------------- steps


def make_optimizer(model: nn.Module, cfg: StepConfig | None = None) -> torch.optim.Optimizer:
    """Adam (as in the VAT paper) for the hand-written steps, its state allocated up front.

    PyTorch's default Adam (on CPU its per-parameter loop), as the seed article uses, or the fused one
    with ``cfg.fused_adam`` (the optimizer the trainer builds).
    """
    fused = cfg is not None and cfg.fused_adam
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True if fused else None)
    allocate_state(model, opt)
    return opt


def allocate_state(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    """Allocate the optimizer's state with one step on zero gradients (Adam: no parameter change)."""
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)


def supervised_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x_l: Tensor, y_l: Tensor, x_u: Tensor, cfg: StepConfig
) -> Tensor:
    """Supervised reference: one forward/backward over ``cat([x_l, x_u])`` (CE on the labeled rows)."""
    optimizer.zero_grad(set_to_none=True)
    with cfg.autocast():
        logits = model(torch.cat([x_l, x_u]))
        loss = F.cross_entropy(logits[: x_l.shape[0]].float(), y_l)
    loss.backward()
    optimizer.step()
    return loss.detach()


def seed_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x_l: Tensor, y_l: Tensor, x_u: Tensor, cfg: StepConfig
) -> Tensor:
    """The seed article's VAT step (see :mod:`_seed_vat`)."""
    with cfg.autocast():
        return seed_vat_step(
            model, optimizer, x_l, y_l, x_u, vat=SeedVATLoss(xi=cfg.seed_xi, eps=cfg.eps, ip=1), alpha=cfg.alpha
        )


def make_trainer(name: str, model: nn.Module, batch: Batches, cfg: StepConfig) -> Trainer:
    """A :class:`torchvat.train.Trainer` running step type ``name`` on ``model`` (its state allocated)."""
    method, options = TRAINER_STEPS[name]
    if options.get("compile"):
        options = {**options, "compile": cfg.compile_mode}
    x_l, y_l, x_u = batch
    trainer = Trainer(
        model,
        x_labeled=x_l,
        y_labeled=y_l,
        x_unlabeled=x_u,
        method=method,
        eps=cfg.eps,
        alpha=cfg.alpha,
        beta=cfg.beta,
        n_power=1,
        # the seed's computation: separate clean passes, the unlabeled rows regularized (the engine's
        # default for a BatchNorm model is one joint pass over every row, a different computation)
        regularize="unlabeled",
        batch_size=x_l.shape[0],
        unlabeled_batch_size=x_u.shape[0],
        device=str(cfg.device),
        amp="bf16" if cfg.amp else None,
        channels_last=cfg.channels_last,
        progress=False,
        **options,
    )
    allocate_state(trainer.model, trainer.optimizer)
    return trainer


def method_step(trainer: Trainer, batch: Batch) -> Tensor:
    """The trainer's step without its per-step guards: its method's loss, one backward, its optimizer.

    :func:`torchvat.train.compute_method_loss` (clean passes, the method's terms, their weighted sum)
    on the trainer's model, method and generator, under its autocast, then ``zero_grad``, one
    ``backward`` and one step of the trainer's optimizer. :meth:`Trainer.train_step` adds the
    non-finite check (``config.nonfinite``) and the metrics; ``torchvat-vat-train-step`` times it.
    """
    if trainer._mark_steps:  # a CUDA-graph compile mode: as Trainer.train_step, mark where the step begins
        torch.compiler.cudagraph_mark_step_begin()
    with trainer._autocast():
        loss, _, _ = compute_method_loss(
            trainer.forward_model, trainer.method, batch, trainer.loss_weights(), generator=trainer.generator
        )
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainer.optimizer.step()
    return loss.detach()


def make_step(name: str, model: nn.Module, batch: Batches, cfg: StepConfig) -> Step:
    """Step type ``name`` on a deep copy of ``model`` with its own optimizer (or trainer)."""
    m = copy.deepcopy(model)
    x_l, y_l, x_u = batch
    if name in TRAINER_STEPS:
        trainer = make_trainer(name, m, batch, cfg)
        tb = Batch(x_l, y_l, x_u if trainer.method.uses_unlabeled else None)
        if name == TRAIN_STEP:
            return Step(name, trainer.model, lambda: trainer.train_step(tb)["loss"])
        return Step(name, trainer.model, lambda: method_step(trainer, tb))
    if name == SEED_COMPILED:
        m = torch.compile(m, mode=cfg.compile_mode)  # type: ignore[assignment]
        if cfg.compile_mode in CUDAGRAPH_MODES:  # as the trainer does: mark where each step begins
            opt = make_optimizer(m, cfg)

            def run() -> Tensor:
                torch.compiler.cudagraph_mark_step_begin()
                return seed_step(m, opt, x_l, y_l, x_u, cfg)

            return Step(name, m, run)
    fn = {"supervised": supervised_step, "seed-vat": seed_step, SEED_COMPILED: seed_step}.get(name)
    if fn is None:
        known = ", ".join((*STEP_TYPES, *COMPILED_STEPS))
        raise ValueError(f"step type must be one of {known}, got {name!r}")
    opt = make_optimizer(m, cfg)
    return Step(name, m, lambda: fn(m, opt, x_l, y_l, x_u, cfg))


# --------------------------------------------------------------------------------------------- setup


def build(args: argparse.Namespace) -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """The model (train mode, on the device) and fixed labeled/unlabeled batches."""
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if args.model == "tiny-mlp":
        shape: tuple[int, ...] = (16,)
        model: nn.Module = MLP(16, 10, hidden_sizes=(32, 16))
    elif args.model == "mlp":
        shape = (1, 28, 28)
        model = build_model("mnist-mlp", input_shape=shape, n_classes=10)
    else:
        shape = (3, args.image_size, args.image_size)
        model = build_model(args.model, input_shape=shape, n_classes=10)
    x_l = torch.rand(args.labeled, *shape)
    y_l = torch.randint(0, 10, (args.labeled,))
    x_u = torch.rand(args.unlabeled, *shape)
    model, x_l, x_u = model.to(device), x_l.to(device), x_u.to(device)
    if getattr(args, "channels_last", False) and x_l.ndim == 4:  # every step type alike
        model = model.to(memory_format=torch.channels_last)
        x_l, x_u = (t.contiguous(memory_format=torch.channels_last) for t in (x_l, x_u))
    return model.train(), x_l, y_l.to(device), x_u


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------- counting


class PassCounter:
    """Counts forward passes of a model and backward passes that reach its first parameterized layer."""

    def __init__(self, model: nn.Module) -> None:
        self.forward = 0
        self.backward = 0
        first = next(m for m in model.modules() if any(True for _ in m.parameters(recurse=False)))
        self._handles = [
            model.register_forward_hook(self._on_forward),
            first.register_forward_hook(self._on_first),
        ]

    def _on_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        self.forward += 1

    def _on_first(self, module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(self._on_grad)

    def _on_grad(self, grad: Tensor) -> None:
        self.backward += 1

    def remove(self) -> None:
        """Remove the hooks."""
        for h in self._handles:
            h.remove()


def count_passes(name: str, model: nn.Module, batch: Batches, cfg: StepConfig) -> tuple[int, int]:
    """Forward and backward passes of one step of ``name`` (on a copy of the model)."""
    step = make_step(name, model, batch, cfg)
    step.run()  # the steady state: the first call of a VAT loss also checks its target once
    counter = PassCounter(step.model)
    try:
        step.run()
    finally:
        counter.remove()
    return counter.forward, counter.backward


class FlopCounter(TorchDispatchMode):
    """Total FLOPs of the ATen operators with a formula in ``torch.utils.flop_counter.flop_registry``.

    ``FlopCounterMode`` without its module tracker, whose gradient hooks on the model's inputs fail
    when an input gradient is taken with ``torch.autograd.grad`` from a leaf (adversarial training).
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func.overloadpacket)
        if count is not None:
            self.total += int(count(*args, **kwargs, out_val=out))
        return out


class OpCounter(TorchDispatchMode):
    """Counts the ATen operators dispatched (forward, backward and optimizer alike).

    On a GPU nearly every one of them is a kernel launch (views and metadata operations are
    counted too but launch nothing), so when a step is bound by launches and host-side work
    rather than arithmetic (small batches on a fast GPU), its time follows this count.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.total += 1
        return func(*args, **(kwargs or {}))


def count_ops(name: str, model: nn.Module, batch: Batches, cfg: StepConfig) -> int:
    """ATen operators dispatched by one step of ``name`` (after one untimed step that allocates state)."""
    step = make_step(name, model, batch, cfg)
    step.run()
    with OpCounter() as counter:
        step.run()
    return counter.total


def count_flops(name: str, model: nn.Module, batch: Batches, cfg: StepConfig) -> int:
    """FLOPs of one step (forward, backward and input-gradient passes; optimizer arithmetic excluded)."""
    step = make_step(name, model, batch, cfg)
    step.run()  # the steady state (see count_passes)
    with FlopCounter() as counter:
        step.run()
    return counter.total


def peak_flops_per_s(device: torch.device, amp: bool, size: int) -> float:
    """The best rate of a ``size`` x ``size`` matmul (float32, or bfloat16 with ``amp``) in this process."""
    dtype = torch.bfloat16 if amp else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for i in range(6):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        if i > 0:
            best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best


# --------------------------------------------------------------------------------------------- memory


def _status_mib(field_name: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ``/proc/self/clear_refs``, value 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def memory_child(args: argparse.Namespace) -> float:
    """In a fresh process: peak resident set size during the first step of ``args.memory_child``, above setup (MiB).

    On Linux the peak mark (``VmHWM``) is reset after setup, so the measure does not depend on transient
    peaks of the imports; elsewhere ``ru_maxrss`` growth is used (a lower bound).
    """
    cfg = config_from(args)
    model, x_l, y_l, x_u = build(args)
    step = make_step(args.memory_child, model, (x_l, y_l, x_u), cfg)
    if _reset_peak_rss() and _status_mib("VmRSS") is not None:
        before = _status_mib("VmRSS")
        step.run()
        return float(_status_mib("VmHWM")) - float(before)
    scale = 1024.0 if sys.platform != "darwin" else 1024.0**2
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    step.run()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale - before


def measure_memory_subprocess(argv: Sequence[str], name: str, timeout: float = 600.0) -> float:
    """Run :func:`memory_child` for step type ``name`` in a subprocess with the same arguments."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--memory-child", name]
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])


def cuda_peak_mib(name: str, model: nn.Module, batch: Batches, cfg: StepConfig) -> float:
    """Peak GPU memory of one step above what was allocated before it (MiB)."""
    step = make_step(name, model, batch, cfg)
    step.run()  # warm the caching allocator
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step.run()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


# --------------------------------------------------------------------------------------------- timing


def time_steps(steps: dict[str, Step], device: torch.device, *, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Interleaved timing (seconds per step) of every step type (each has its own model and optimizer)."""
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            _sync(device)
            t0 = time.perf_counter()
            steps[n].run()
            _sync(device)
            if r >= warmup:
                times[n].append(time.perf_counter() - t0)
    return times


# --------------------------------------------------------------------------------------------- report


@dataclass
class Row:
    """One line of the result table."""

    name: str
    median_ms: float
    min_ms: float
    ratio: float
    bound: float
    forward: int
    backward: int
    gflop: float
    flop_bound_ms: float
    peak_mib: float | None
    aten_ops: int = -1
    rows_per_s: float = 0.0


def format_table(rows: list[Row]) -> str:
    """The markdown table of the results."""
    head = (
        "| step | median ms | min ms | x supervised | pass bound | fwd | bwd | GFLOP | FLOP-bound ms "
        "| measured / FLOP-bound | ATen ops | samples/s | peak mem MiB |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        mem = "n/a" if r.peak_mib is None else f"{r.peak_mib:.1f}"
        passes = f"{r.forward} | {r.backward}" if r.forward >= 0 else "n/a | n/a"
        if r.gflop > 0:
            flops = f"{r.gflop:.3f} | {r.flop_bound_ms:.2f} | {r.median_ms / r.flop_bound_ms:.1f}"
        else:
            flops = "n/a | n/a | n/a"
        ops = f"{r.aten_ops}" if r.aten_ops >= 0 else "n/a"
        lines.append(
            f"| {r.name} | {r.median_ms:.2f} | {r.min_ms:.2f} | {r.ratio:.2f} | {r.bound:.2f} | {passes} "
            f"| {flops} | {ops} | {r.rows_per_s:.0f} | {mem} |"
        )
    return "\n".join(lines)


def speedup(times: dict[str, list[float]], slow: str = "seed-vat", fast: str = "torchvat-vat") -> tuple[float, float]:
    """(median of the paired per-repetition ratios, ratio of the medians) of ``slow`` over ``fast``."""
    paired = [a / b for a, b in zip(times[slow], times[fast], strict=True)]
    return statistics.median(paired), statistics.median(times[slow]) / statistics.median(times[fast])


# --------------------------------------------------------------------------------------------- profiling


def profile_steps(names: Sequence[str], model: nn.Module, batch: Batches, cfg: StepConfig, n: int) -> str:
    """``torch.profiler`` tables (top operators by self CPU time) of ``n`` steps of each given step type."""
    from torch.profiler import ProfilerActivity, profile

    out = []
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cfg.device.type == "cuda" else [])
    for name in names:
        step = make_step(name, model, batch, cfg)
        for _ in range(2):
            step.run()
        with profile(activities=activities) as prof:
            for _ in range(n):
                step.run()
        out.append(f"### profile: {name} ({n} steps)\n")
        out.append(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=22))
    return "\n".join(out)


def overhead_breakdown(model: nn.Module, x_u: Tensor, n: int = 200) -> str:
    """Microseconds per call of the bookkeeping a torchvat VAT call does besides the model passes."""
    from torchvat.core import frozen_batchnorm_stats, l2_normalize, probe_scale

    def per_call(fn: Callable[[], Any]) -> float:
        fn()
        _sync(x_u.device)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        _sync(x_u.device)
        return (time.perf_counter() - t0) / n * 1e6

    snap = RNGSnapshot.capture(x_u.device)
    g = torch.randn_like(x_u)
    gen = torch.Generator(device=x_u.device)

    def replay() -> None:
        with snap.replay():
            pass

    def frozen() -> None:
        with frozen_batchnorm_stats(model):
            pass

    items = {
        "RNGSnapshot.capture": lambda: RNGSnapshot.capture(x_u.device),
        "RNGSnapshot.replay (enter+exit)": replay,
        "frozen_batchnorm_stats (enter+exit)": frozen,
        "l2_normalize(x_u-shaped)": lambda: l2_normalize(g),
        "probe_scale(x_u, 'auto')": lambda: probe_scale(x_u, "auto", 1.0),
        "randn(x_u-shaped, generator)": lambda: torch.randn(x_u.shape, generator=gen, device=x_u.device),
        "torch.cat([x_u, x_u])": lambda: torch.cat([x_u, x_u]),
    }
    lines = ["| operation | us per call |", "|---|---:|"]
    lines += [f"| {k} | {per_call(f):.1f} |" for k, f in items.items()]
    return "\n".join(lines)


def loss_call_table(model: nn.Module, x_u: Tensor, cfg: StepConfig, repeats: int) -> str:
    """``vat_loss(model, x_u, probe="exact")`` without logits: a clean pass of its own vs the probe's primal.

    The first row is what the call cost before the exact probe took its target from its own first
    (forward-mode) pass: a no-grad clean pass under the replayed random state, then the call with
    those logits. Timed in interleaved repetitions, loss and ``backward`` included; the parameter
    gradients are cleared between calls.
    """
    from torchvat import vat_loss
    from torchvat.core import frozen_batchnorm_stats

    m = copy.deepcopy(model)

    def separate() -> Tensor:
        snap = RNGSnapshot.capture(x_u.device)
        with snap.replay(), torch.no_grad(), frozen_batchnorm_stats(m):
            logits = m(x_u)
        loss = vat_loss(m, x_u, logits=logits, eps=cfg.eps, probe="exact", rng=snap)
        loss.backward()
        m.zero_grad(set_to_none=True)
        return loss

    def reused() -> Tensor:
        loss = vat_loss(m, x_u, eps=cfg.eps, probe="exact")
        loss.backward()
        m.zero_grad(set_to_none=True)
        return loss

    steps = {
        "clean pass of its own (before)": Step("separate", m, lambda: _autocast_call(cfg, separate)),
        "target from the probe's primal": Step("reused", m, lambda: _autocast_call(cfg, reused)),
    }
    times = time_steps(steps, x_u.device, repeats=repeats, warmup=3)
    ops = {}
    for name, step in steps.items():
        with OpCounter() as counter:
            step.run()
        ops[name] = counter.total
    ref = statistics.median(times["clean pass of its own (before)"])
    lines = ["| vat_loss(probe='exact'), no logits | median ms | ratio | ATen ops |", "|---|---:|---:|---:|"]
    for name, t in times.items():
        lines.append(f"| {name} | {statistics.median(t) * 1e3:.2f} | {ref / statistics.median(t):.2f}x | {ops[name]} |")
    return "\n".join(lines)


def _autocast_call(cfg: StepConfig, fn: Callable[[], Tensor]) -> Tensor:
    with cfg.autocast():
        return fn()


def guard_breakdown(model: nn.Module, n: int = 200) -> str:
    """Cost of the non-finite guard of ``Trainer.train_step``: the previous per-tensor form vs the current one.

    Rows: saving and restoring every buffer (a clone, then a ``where`` and a ``copy_`` per buffer,
    as the trainer did before; :class:`~torchvat.train.finite.BufferSnapshot`; both with the two
    walks over the module's buffers the trainer makes), and the gradient
    flags (one ``sum`` per gradient; one ``_foreach_norm`` per device and dtype). Microseconds per
    call and ATen operators per call, on the model's device.
    """
    from torchvat.train.finite import BufferSnapshot, grad_finite_flags

    device = next(model.parameters()).device
    m = copy.deepcopy(model)
    buffers = list(m.buffers())
    grads = [torch.randn_like(p) for p in m.parameters()]
    ok = torch.ones((), dtype=torch.bool, device=device)

    def per_buffer() -> None:  # both forms read the module's buffers before and after the step
        saved = [b.detach().clone() for b in m.buffers()]
        with torch.no_grad():
            for now, before in zip(list(m.buffers()), saved, strict=True):
                now.copy_(torch.where(ok, now, before))

    def snapshot() -> None:
        BufferSnapshot(list(m.buffers())).restore(ok, list(m.buffers()))

    items = {
        f"buffers ({len(buffers)}): clone, where, copy_ per buffer (before)": per_buffer,
        f"buffers ({len(buffers)}): BufferSnapshot + restore": snapshot,
        f"gradient flags ({len(grads)}): one sum per gradient": lambda: grad_finite_flags(grads, foreach=False),
        f"gradient flags ({len(grads)}): _foreach_norm per device and dtype": lambda: grad_finite_flags(
            grads, foreach=True
        ),
    }
    lines = ["| guard operation | us per call | ATen ops |", "|---|---:|---:|"]
    for name, fn in items.items():
        fn()
        with OpCounter() as counter:
            fn()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        _sync(device)
        lines.append(f"| {name} | {(time.perf_counter() - t0) / n * 1e6:.1f} | {counter.total} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=MODELS, default="mlp")
    p.add_argument("--labeled", type=int, default=32)
    p.add_argument("--unlabeled", type=int, default=128)
    p.add_argument("--image-size", type=int, default=32, help="height and width for the conv networks")
    p.add_argument("--repeats", type=int, default=30, help="timed interleaved repetitions")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast around the forward passes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--fused-adam",
        action="store_true",
        help="fused Adam for supervised and seed-vat too (the trainer's steps always use the trainer's optimizer)",
    )
    p.add_argument("--eps", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", default=",".join(STEP_TYPES), help="comma-separated step types to run")
    p.add_argument(
        "--channels-last", action="store_true", help="conv nets: model and batches in channels_last (every step type)"
    )
    p.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=COMPILE_MODES,
        metavar="MODE",
        help=f"add {COMPILED!r} (torchvat-vat, compile=MODE) and {SEED_COMPILED!r} (seed-vat, torch.compile(model, "
        "mode=MODE)); MODE: default (if omitted), reduce-overhead, max-autotune, max-autotune-no-cudagraphs",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--no-flops", action="store_true", help="skip FLOP and ATen-operator counting")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="also profile N steps of seed/torchvat VAT")
    p.add_argument(
        "--loss-call",
        action="store_true",
        help="also time vat_loss(probe='exact') without logits: its own clean pass vs the probe's primal",
    )
    p.add_argument("--matmul-size", type=int, default=0, help="matmul size for the peak rate (0: by device)")
    p.add_argument("--quick", action="store_true", help="tiny MLP, 2 repeats, 1 thread, no memory: a smoke run")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    return p


def config_from(args: argparse.Namespace) -> StepConfig:
    """The step configuration of the parsed arguments."""
    return StepConfig(
        eps=args.eps,
        amp=args.amp,
        fused_adam=args.fused_adam,
        channels_last=args.channels_last,
        compile_mode=args.compile or "default",
        device=torch.device(args.device),
    )


def _apply_quick(args: argparse.Namespace) -> None:
    args.model = "tiny-mlp"
    args.labeled, args.unlabeled = 4, 8
    args.repeats, args.warmup = 2, 1
    args.no_memory = True
    args.threads = 1
    args.matmul_size = args.matmul_size or 128


def machine_line(args: argparse.Namespace) -> str:
    """Date, machine, torch version and settings of the run."""
    dev = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')} | {platform.node()} | {dev} | torch {torch.__version__} | "
        f"threads {torch.get_num_threads()} | model {args.model} | batch {args.labeled}+{args.unlabeled} | "
        f"amp {args.amp} | seed/supervised Adam {'fused' if args.fused_adam else 'default'} "
        f"(trainer: fused) | repeats {args.repeats} (warmup {args.warmup})"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the tables and return the results."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.quick:
        _apply_quick(args)
    torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        print(json.dumps({"peak_mib": memory_child(args)}))
        return {}
    cfg = config_from(args)
    model, x_l, y_l, x_u = build(args)
    batch = (x_l, y_l, x_u)
    names = [s for s in args.steps.split(",") if s]
    for s in names:
        if s not in STEP_TYPES:
            raise SystemExit(f"--steps: unknown step type {s!r}; choose from {', '.join(STEP_TYPES)}")
    if args.compile:
        names.extend(COMPILED_STEPS)
    steps = {s: make_step(s, model, batch, cfg) for s in names}
    if args.compile:
        for name in COMPILED_STEPS:
            t0 = time.perf_counter()
            for _ in range(2):
                steps[name].run()
            print(f"compile + 2 warm-up steps of {name}: {time.perf_counter() - t0:.1f} s")

    times = time_steps(steps, cfg.device, repeats=args.repeats, warmup=args.warmup)
    size = args.matmul_size or (8192 if args.device == "cuda" else 1024)
    peak = peak_flops_per_s(cfg.device, args.amp, size)
    ref = statistics.median(times["supervised"]) if "supervised" in times else float("nan")
    rows = []
    for name in steps:
        compiled = name in COMPILED_STEPS
        fwd, bwd = count_passes(name, model, batch, cfg) if not compiled else (-1, -1)
        flops = 0 if args.no_flops or compiled else count_flops(name, model, batch, cfg)
        ops = -1 if args.no_flops or compiled else count_ops(name, model, batch, cfg)
        mem: float | None = None
        if not args.no_memory and not compiled:
            if cfg.device.type == "cuda":
                mem = cuda_peak_mib(name, model, batch, cfg)
            else:
                child_argv = [a for a in argv if a not in ("--compile", *COMPILE_MODES)]
                mem = measure_memory_subprocess(child_argv, name)
        med = statistics.median(times[name])
        rows.append(
            Row(
                name=name,
                median_ms=med * 1e3,
                min_ms=min(times[name]) * 1e3,
                ratio=med / ref,
                bound=pass_bound(name, args.labeled, args.unlabeled),
                forward=fwd,
                backward=bwd,
                gflop=flops / 1e9,
                flop_bound_ms=flops / peak * 1e3,
                peak_mib=mem,
                aten_ops=ops,
                rows_per_s=(args.labeled + (args.unlabeled if name != "torchvat-at" else 0)) / med,
            )
        )
    print(machine_line(args))
    print(f"peak matmul rate ({size}x{size}, {'bf16' if args.amp else 'fp32'}): {peak / 1e9:.1f} GFLOP/s")
    table = format_table(rows)
    print(table)
    result: dict[str, Any] = {"rows": rows, "times": times, "table": table, "peak_flops": peak}
    by_name = {r.name: r for r in rows}
    for slow, fast in (("seed-vat", "torchvat-vat"), ("seed-vat", COMPILED), (SEED_COMPILED, COMPILED)):
        if slow not in times or fast not in times:
            continue
        paired, of_medians = speedup(times, slow=slow, fast=fast)
        if slow == "seed-vat":
            result.setdefault("speedups", {})[fast] = paired
        else:
            result.setdefault("speedups", {})[f"{fast} over {slow}"] = paired
        if fast == "torchvat-vat":
            result["speedup"] = paired
        bounds = pass_bound(slow, args.labeled, args.unlabeled) / pass_bound(fast, args.labeled, args.unlabeled)
        op_ratio = (
            f"; ATen-operator ratio {by_name[slow].aten_ops / by_name[fast].aten_ops:.2f}x"
            if by_name[fast].aten_ops > 0 and by_name[slow].aten_ops > 0
            else ""
        )
        print(
            f"\nspeedup {fast} over {slow}: {paired:.2f}x (median of paired ratios), "
            f"{of_medians:.2f}x (ratio of medians); pass-count bound {bounds:.2f}x{op_ratio}"
        )
    if args.loss_call:
        print("\n### vat_loss without logits, exact probe, on the unlabeled batch\n")
        print(loss_call_table(model, x_u, cfg, args.repeats))
    if args.profile:
        print(profile_steps([k for k in ("seed-vat", "torchvat-vat") if k in steps], model, batch, cfg, args.profile))
        print("\n### bookkeeping of a torchvat VAT call (us per call)\n")
        print(overhead_breakdown(model, x_u))
        print("\n### the non-finite guard of Trainer.train_step\n")
        print(guard_breakdown(model))
    return result


if __name__ == "__main__":
    main()
