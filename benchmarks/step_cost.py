"""Cost of one training step: supervised, the seed article's VAT, and torchvat's regularizers.

Every step type starts from the same weights (a deep copy each), sees the same labeled and
unlabeled batches, and is timed in interleaved repetitions (round robin over the step types, the
starting type rotating each repetition) in one process, so load changes on a shared machine hit all
step types alike. ``n_power = 1`` everywhere.

Step types:

* ``supervised``: one forward pass over ``cat([x_l, x_u])``, cross entropy on the labeled rows, one
  backward (through the whole batch), one optimizer step: the cost of processing the same samples once.
* ``seed-vat``: the seed article's step (:mod:`_seed_vat`): labeled forward, clean no-grad forward on
  ``x_u``, a probe forward and a full backward (parameter gradients included), the perturbed forward,
  one backward, one optimizer step.
* ``torchvat-vat``: :func:`torchvat_vat_step`: one clean forward over ``cat([x_l, x_u])``; the clean
  logits of the unlabeled rows are the VAT target; probe with input gradients only; perturbed forward;
  one backward; one optimizer step.
* ``torchvat-vat-split``: :func:`torchvat_vat_split_step`: the labeled rows forwarded with gradients,
  the unlabeled rows in their own no-grad clean pass (the VAT target); the rest as ``torchvat-vat``.
  The final backward then skips the unlabeled rows of the clean pass, and the target has the same
  BatchNorm batch (and dropout draws) as the probe and perturbed passes.
* ``torchvat-vat-exact``: ``torchvat-vat`` with ``probe="exact"`` (Gauss-Newton product, forward-mode AD).
* ``torchvat-at``: adversarial training on the labeled rows, the input gradient taken through the
  clean pass's graph (``x_l`` requires grad, its clean logits are passed in).
* ``torchvat-vat+ent``: ``torchvat-vat`` plus the entropy of the unlabeled clean predictions.

Reported per step type: median and minimum wall time, ratio to ``supervised``, forward and
backward passes through the network (counted with hooks in a separate, untimed step), FLOPs
(``torch.utils.flop_counter.FlopCounterMode``) and the FLOP-bound time at the peak matmul rate
measured in the same process, and peak memory of one step (GPU: ``torch.cuda.max_memory_allocated``
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
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _seed_vat import SeedVATLoss, seed_vat_step

from torchvat.core import RNGSnapshot, adversarial_loss, entropy_loss, vat_loss
from torchvat.models import MLP, build_model

STEP_TYPES = (
    "supervised",
    "seed-vat",
    "torchvat-vat",
    "torchvat-vat-split",
    "torchvat-vat-exact",
    "torchvat-at",
    "torchvat-vat+ent",
)
COMPILED = "torchvat-vat-compiled"
MODELS = ("mlp", "conv-large", "wrn-28-2", "tiny-mlp")


@dataclass
class StepConfig:
    """Hyperparameters shared by the step types."""

    eps: float = 1.0
    seed_xi: float = 10.0
    alpha: float = 1.0
    beta: float = 1.0
    amp: bool = False
    fused_adam: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def autocast(self) -> AbstractContextManager[Any]:
        """Autocast to bfloat16 around the forward passes when ``amp`` is on."""
        if not self.amp:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


StepFn = Callable[[nn.Module, torch.optim.Optimizer, Tensor, Tensor, Tensor, StepConfig], Tensor]


# --------------------------------------------------------------------------------------------- steps


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


def torchvat_vat_loss(
    model: nn.Module,
    x_l: Tensor,
    y_l: Tensor,
    x_u: Tensor,
    *,
    eps: float,
    alpha: float = 1.0,
    beta: float = 0.0,
    probe: str = "finite_difference",
    generator: torch.Generator | None = None,
) -> Tensor:
    """CE + alpha * LDS (+ beta * entropy) with ONE clean forward pass over ``cat([x_l, x_u])``.

    The clean logits of the unlabeled rows are the VAT target (``vat_loss`` detaches them); the RNG
    snapshot taken before the clean pass is replayed by the probe and perturbed passes.
    """
    n = x_l.shape[0]
    rng = RNGSnapshot.capture(x_l.device)
    logits = model(torch.cat([x_l, x_u]))
    logits_u = logits[n:]
    loss = F.cross_entropy(logits[:n].float(), y_l)
    lds = vat_loss(model, x_u, logits=logits_u, eps=eps, n_power=1, probe=probe, rng=rng, generator=generator)
    loss = loss + alpha * lds
    if beta != 0:
        loss = loss + beta * entropy_loss(logits_u)
    return loss


def torchvat_vat_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x_l: Tensor,
    y_l: Tensor,
    x_u: Tensor,
    cfg: StepConfig,
    *,
    probe: str = "finite_difference",
    beta: float = 0.0,
) -> Tensor:
    """A VAT training step written with torchvat: one clean pass, the LDS, one backward, one step.

    This is the step the trainer's VAT method performs; it is written here so the benchmark does not
    depend on the trainer, and can be swapped for the trainer's method object.
    """
    optimizer.zero_grad(set_to_none=True)
    with cfg.autocast():
        loss = torchvat_vat_loss(model, x_l, y_l, x_u, eps=cfg.eps, alpha=cfg.alpha, beta=beta, probe=probe)
    loss.backward()
    optimizer.step()
    return loss.detach()


def torchvat_vat_split_loss(
    model: nn.Module,
    x_l: Tensor,
    y_l: Tensor,
    x_u: Tensor,
    *,
    eps: float,
    alpha: float = 1.0,
    probe: str = "finite_difference",
    generator: torch.Generator | None = None,
) -> Tensor:
    """CE + alpha * LDS with a labeled pass (with gradients) and a separate no-grad unlabeled clean pass."""
    loss = F.cross_entropy(model(x_l).float(), y_l)
    rng = RNGSnapshot.capture(x_u.device)
    with torch.no_grad():
        logits_u = model(x_u)
    lds = vat_loss(model, x_u, logits=logits_u, eps=eps, n_power=1, probe=probe, rng=rng, generator=generator)
    return loss + alpha * lds


def torchvat_vat_split_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x_l: Tensor, y_l: Tensor, x_u: Tensor, cfg: StepConfig
) -> Tensor:
    """VAT step with torchvat, labeled and unlabeled clean passes separate (see :func:`torchvat_vat_split_loss`)."""
    optimizer.zero_grad(set_to_none=True)
    with cfg.autocast():
        loss = torchvat_vat_split_loss(model, x_l, y_l, x_u, eps=cfg.eps, alpha=cfg.alpha)
    loss.backward()
    optimizer.step()
    return loss.detach()


def torchvat_at_loss(model: nn.Module, x_l: Tensor, y_l: Tensor, x_u: Tensor, *, eps: float, alpha: float) -> Tensor:
    """CE + alpha * adversarial CE on the labeled rows, the input gradient taken through the clean graph."""
    n = x_l.shape[0]
    rng = RNGSnapshot.capture(x_l.device)
    x_lr = x_l.detach().requires_grad_(True)
    logits = model(torch.cat([x_lr, x_u]))
    ce = F.cross_entropy(logits[:n].float(), y_l)
    at = adversarial_loss(model, x_lr, y_l, logits=logits[:n], eps=eps, rng=rng)
    return ce + alpha * at


def torchvat_at_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x_l: Tensor, y_l: Tensor, x_u: Tensor, cfg: StepConfig
) -> Tensor:
    """Adversarial training step with torchvat (the clean pass covers ``cat([x_l, x_u])`` as supervised)."""
    optimizer.zero_grad(set_to_none=True)
    with cfg.autocast():
        loss = torchvat_at_loss(model, x_l, y_l, x_u, eps=cfg.eps, alpha=cfg.alpha)
    loss.backward()
    optimizer.step()
    return loss.detach()


def step_functions(cfg: StepConfig) -> dict[str, StepFn]:
    """The step function of every step type."""
    return {
        "supervised": supervised_step,
        "seed-vat": seed_step,
        "torchvat-vat": torchvat_vat_step,
        "torchvat-vat-split": torchvat_vat_split_step,
        "torchvat-vat-exact": lambda m, o, xl, yl, xu, c: torchvat_vat_step(m, o, xl, yl, xu, c, probe="exact"),
        "torchvat-at": torchvat_at_step,
        "torchvat-vat+ent": lambda m, o, xl, yl, xu, c: torchvat_vat_step(m, o, xl, yl, xu, c, beta=c.beta),
        COMPILED: torchvat_vat_step,
    }


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
    return model.to(device).train(), x_l.to(device), y_l.to(device), x_u.to(device)


def make_optimizer(model: nn.Module, cfg: StepConfig | None = None) -> torch.optim.Optimizer:
    """Adam (as in the VAT paper), its state allocated up front by a step with zero gradients.

    PyTorch's default (multi-tensor) Adam, or the fused one with ``cfg.fused_adam``.
    """
    fused = cfg is not None and cfg.fused_adam
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True if fused else None)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return opt


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


def count_passes(
    step: StepFn, model: nn.Module, batch: tuple[Tensor, Tensor, Tensor], cfg: StepConfig
) -> tuple[int, int]:
    """Forward and backward passes of one step (on a copy of the model)."""
    m = copy.deepcopy(model)
    opt = make_optimizer(m, cfg)
    counter = PassCounter(m)
    try:
        step(m, opt, *batch, cfg)
    finally:
        counter.remove()
    return counter.forward, counter.backward


def count_flops(step: StepFn, model: nn.Module, batch: tuple[Tensor, Tensor, Tensor], cfg: StepConfig) -> int:
    """FLOPs of one step (forward, backward and input-gradient passes; optimizer arithmetic excluded)."""
    m = copy.deepcopy(model)
    opt = make_optimizer(m, cfg)
    with FlopCounterMode(display=False) as counter:
        step(m, opt, *batch, cfg)
    return int(counter.get_total_flops())


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
    opt = make_optimizer(model, cfg)
    step = step_functions(cfg)[args.memory_child]
    if _reset_peak_rss() and _status_mib("VmRSS") is not None:
        before = _status_mib("VmRSS")
        step(model, opt, x_l, y_l, x_u, cfg)
        return float(_status_mib("VmHWM")) - float(before)
    scale = 1024.0 if sys.platform != "darwin" else 1024.0**2
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    step(model, opt, x_l, y_l, x_u, cfg)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale - before


def measure_memory_subprocess(argv: Sequence[str], name: str, timeout: float = 600.0) -> float:
    """Run :func:`memory_child` for step type ``name`` in a subprocess with the same arguments."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--memory-child", name]
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])


def cuda_peak_mib(step: StepFn, model: nn.Module, batch: tuple[Tensor, Tensor, Tensor], cfg: StepConfig) -> float:
    """Peak GPU memory of one step above what was allocated before it (MiB)."""
    m = copy.deepcopy(model)
    opt = make_optimizer(m, cfg)
    step(m, opt, *batch, cfg)  # warm the caching allocator
    opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step(m, opt, *batch, cfg)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


# --------------------------------------------------------------------------------------------- timing


def time_steps(
    steps: dict[str, StepFn],
    model: nn.Module,
    batch: tuple[Tensor, Tensor, Tensor],
    cfg: StepConfig,
    *,
    repeats: int,
    warmup: int,
    models: dict[str, nn.Module] | None = None,
) -> dict[str, list[float]]:
    """Interleaved timing (seconds per step) of every step type; own model copy and optimizer each."""
    names = list(steps)
    given = models or {}
    copies = {n: given[n] if n in given else copy.deepcopy(model) for n in names}
    opts = {n: make_optimizer(copies[n], cfg) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            _sync(cfg.device)
            t0 = time.perf_counter()
            steps[n](copies[n], opts[n], *batch, cfg)
            _sync(cfg.device)
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
    forward: int
    backward: int
    gflop: float
    flop_bound_ms: float
    peak_mib: float | None


def format_table(rows: list[Row]) -> str:
    """The markdown table of the results."""
    head = (
        "| step | median ms | min ms | x supervised | fwd | bwd | GFLOP | FLOP-bound ms | measured / FLOP-bound "
        "| peak mem MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        mem = "n/a" if r.peak_mib is None else f"{r.peak_mib:.1f}"
        passes = f"{r.forward} | {r.backward}" if r.forward >= 0 else "n/a | n/a"
        if r.gflop > 0:
            flops = f"{r.gflop:.3f} | {r.flop_bound_ms:.2f} | {r.median_ms / r.flop_bound_ms:.1f}"
        else:
            flops = "n/a | n/a | n/a"
        lines.append(f"| {r.name} | {r.median_ms:.2f} | {r.min_ms:.2f} | {r.ratio:.2f} | {passes} | {flops} | {mem} |")
    return "\n".join(lines)


def speedup(times: dict[str, list[float]], slow: str = "seed-vat", fast: str = "torchvat-vat") -> tuple[float, float]:
    """(median of the paired per-repetition ratios, ratio of the medians) of ``slow`` over ``fast``."""
    paired = [a / b for a, b in zip(times[slow], times[fast], strict=True)]
    return statistics.median(paired), statistics.median(times[slow]) / statistics.median(times[fast])


# --------------------------------------------------------------------------------------------- profiling


def profile_steps(
    steps: dict[str, StepFn], model: nn.Module, batch: tuple[Tensor, Tensor, Tensor], cfg: StepConfig, n: int
) -> str:
    """``torch.profiler`` tables (top operators by self CPU time) of ``n`` steps of each given step type."""
    from torch.profiler import ProfilerActivity, profile

    out = []
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cfg.device.type == "cuda" else [])
    for name, step in steps.items():
        m = copy.deepcopy(model)
        opt = make_optimizer(m, cfg)
        for _ in range(2):
            step(m, opt, *batch, cfg)
        with profile(activities=activities) as prof:
            for _ in range(n):
                step(m, opt, *batch, cfg)
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
        "randn_like(x_u)": lambda: torch.randn_like(x_u),
        "torch.cat([x_u, x_u])": lambda: torch.cat([x_u, x_u]),
    }
    lines = ["| operation | us per call |", "|---|---:|"]
    lines += [f"| {k} | {per_call(f):.1f} |" for k, f in items.items()]
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
    p.add_argument("--fused-adam", action="store_true", help="fused Adam (same optimizer for every step type)")
    p.add_argument("--eps", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", default=",".join(STEP_TYPES), help="comma-separated step types to run")
    p.add_argument("--compile", action="store_true", help=f"add {COMPILED!r}: torchvat-vat on torch.compile(model)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="also profile N steps of seed/torchvat VAT")
    p.add_argument("--matmul-size", type=int, default=0, help="matmul size for the peak rate (0: by device)")
    p.add_argument("--quick", action="store_true", help="tiny MLP, 2 repeats, 1 thread, no memory: a smoke run")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    return p


def config_from(args: argparse.Namespace) -> StepConfig:
    """The step configuration of the parsed arguments."""
    return StepConfig(eps=args.eps, amp=args.amp, fused_adam=args.fused_adam, device=torch.device(args.device))


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
        f"amp {args.amp} | fused adam {args.fused_adam} | repeats {args.repeats} (warmup {args.warmup})"
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
    all_steps = step_functions(cfg)
    names = [s for s in args.steps.split(",") if s]
    for s in names:
        if s not in all_steps:
            raise SystemExit(f"--steps: unknown step type {s!r}; choose from {', '.join(all_steps)}")
    steps = {s: all_steps[s] for s in names}
    compiled_models: dict[str, nn.Module] = {}
    if args.compile:
        steps[COMPILED] = all_steps[COMPILED]
        cm = copy.deepcopy(model)
        compiled_models[COMPILED] = torch.compile(cm)
        t0 = time.perf_counter()
        for _ in range(2):
            torchvat_vat_step(compiled_models[COMPILED], make_optimizer(cm, cfg), *batch, cfg)
        print(f"compile + 2 warm-up steps of {COMPILED}: {time.perf_counter() - t0:.1f} s")

    times = time_steps(steps, model, batch, cfg, repeats=args.repeats, warmup=args.warmup, models=compiled_models)
    size = args.matmul_size or (8192 if args.device == "cuda" else 1024)
    peak = peak_flops_per_s(cfg.device, args.amp, size)
    ref = statistics.median(times["supervised"]) if "supervised" in times else float("nan")
    rows = []
    for name in steps:
        fwd, bwd = count_passes(steps[name], model, batch, cfg) if name != COMPILED else (-1, -1)
        flops = 0 if args.no_flops or name == COMPILED else count_flops(steps[name], model, batch, cfg)
        mem: float | None = None
        if not args.no_memory and name != COMPILED:
            if cfg.device.type == "cuda":
                mem = cuda_peak_mib(steps[name], model, batch, cfg)
            else:
                child_argv = [a for a in argv if a not in ("--compile",)]
                mem = measure_memory_subprocess(child_argv, name)
        med = statistics.median(times[name])
        rows.append(
            Row(
                name=name,
                median_ms=med * 1e3,
                min_ms=min(times[name]) * 1e3,
                ratio=med / ref,
                forward=fwd,
                backward=bwd,
                gflop=flops / 1e9,
                flop_bound_ms=flops / peak * 1e3,
                peak_mib=mem,
            )
        )
    print(machine_line(args))
    print(f"peak matmul rate ({size}x{size}, {'bf16' if args.amp else 'fp32'}): {peak / 1e9:.1f} GFLOP/s")
    table = format_table(rows)
    print(table)
    result: dict[str, Any] = {"rows": rows, "times": times, "table": table, "peak_flops": peak}
    if "seed-vat" in times and "torchvat-vat" in times:
        paired, of_medians = speedup(times)
        result["speedup"] = paired
        print(
            f"\nspeedup torchvat-vat over seed-vat: {paired:.2f}x (median of paired ratios), "
            f"{of_medians:.2f}x (ratio of medians)"
        )
    if args.profile:
        prof_steps = {k: steps[k] for k in ("seed-vat", "torchvat-vat") if k in steps}
        print(profile_steps(prof_steps, model, batch, cfg, args.profile))
        print("\n### bookkeeping of a torchvat VAT call (us per call)\n")
        print(overhead_breakdown(model, x_u))
    return result


if __name__ == "__main__":
    main()
