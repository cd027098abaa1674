"""End to end: wall-clock time and error of the trainer on digits and Fashion-MNIST for a fixed budget.

For each data set and method, :meth:`torchvat.train.Trainer.fit` runs ``--iterations`` iterations
and the wall time is split, without touching the trainer's code, by wrapping the bound methods of
the trainer instance with a timer that charges every call its exclusive time (time in nested timed
calls goes to those):

* ``data``: :meth:`Trainer.next_batch` (index draw, gather, pairing);
* ``step``: :meth:`Trainer.train_step` (clean passes, perturbation search, backward, optimizer step,
  the trainer's per-step checks);
* ``eval``: the held-out evaluation (``Trainer._evaluate_held_out`` less the callbacks it calls);
* ``logging``: the metric accumulators (``add`` every iteration, ``means`` when logging) and the
  callbacks (``Trainer._call``);
* ``other``: the rest of :meth:`Trainer.fit` (loop, setup of the fit).

On a GPU (``--device cuda``) every timed call starts and ends with ``torch.cuda.synchronize``, so
the phases hold their kernels' time (the synchronizations are the timer's, not the trainer's, and
are not counted as host reads).

``data`` and ``logging`` are also reported per iteration as a percentage of the mean ``step`` time
(the goal for in-memory data: under 5%). Host reads of tensor values (``Tensor.item``,
``tolist``, ``__bool__``, ``__float__``, ``__int__``; each a host-device synchronization on an
accelerator) are counted inside ``next_batch`` and ``train_step``, i.e. on every iteration, outside
logging and evaluation; the goal is 0.

Data: ``digits`` (scikit-learn's bundled 8x8 digits, 100 labels, the ``mlp`` model) and
``fashion-mnist`` (1000 labels, the MNIST MLP on flat inputs; read with
:func:`torchvat.data.load_fashion_mnist`, which needs the IDX files offline: Debian's
``dataset-fashion-mnist`` or ``$TORCHVAT_DATA``). ``eps`` is derived from the data by the trainer.

Run ``python benchmarks/end_to_end.py --help``; ``--quick`` is a seconds-long smoke run.
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from torchvat.data import load_digits_data, load_fashion_mnist
from torchvat.models import build_model
from torchvat.train import Trainer, seed_everything

DATASETS = ("digits", "fashion-mnist")
PHASES = ("data", "step", "eval", "logging", "other")
_HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__")


@dataclass
class PhaseTimer:
    """Exclusive wall time per phase: time spent in a nested timed call is charged to that call."""

    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    #: called at the start and end of every timed call (``torch.cuda.synchronize`` on a GPU)
    sync: Callable[[], None] = lambda: None
    _stack: list[list[float]] = field(default_factory=list)

    def wrap(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with its exclusive time added to ``phase``."""

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            frame = [time.perf_counter(), 0.0]  # start, time of nested timed calls
            self._stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                self._stack.pop()
                elapsed = time.perf_counter() - frame[0]
                self.totals[phase] += elapsed - frame[1]
                self.calls[phase] += 1
                if self._stack:
                    self._stack[-1][1] += elapsed

        return timed


class HostReadCounter:
    """Counts reads of tensor values on the host (``item``, ``tolist``, ``bool``, ``float``, ``int``).

    The methods of ``torch.Tensor`` are replaced while :meth:`patched` is active; a read is counted
    only while :attr:`active` (set around the per-iteration work).
    """

    def __init__(self) -> None:
        self.count = 0
        self.active = 0
        self.where: dict[str, int] = {}

    @contextmanager
    def patched(self) -> Iterator[HostReadCounter]:
        """Replace the tensor methods by counting wrappers for the duration of the block."""
        saved = {name: getattr(torch.Tensor, name) for name in _HOST_READS}

        def counting(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
            def read(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
                if self.active:
                    self.count += 1
                    self.where[name] = self.where.get(name, 0) + 1
                return original(tensor, *args, **kwargs)

            return read

        try:
            for name, original in saved.items():
                setattr(torch.Tensor, name, counting(name, original))
            yield self
        finally:
            for name, original in saved.items():
                setattr(torch.Tensor, name, original)

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with host reads counted during its calls."""

        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.active += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.active -= 1

        return counted


@dataclass
class Run:
    """The result of one training run."""

    dataset: str
    method: str
    iterations: int
    wall_s: float
    phases: dict[str, float]
    test_error: float
    eps: float | None
    host_reads_per_iter: float
    host_reads_where: dict[str, int]

    @property
    def step_ms(self) -> float:
        """Mean time of one :meth:`Trainer.train_step` (ms)."""
        return self.phases["step"] / self.iterations * 1e3

    def percent_of_step(self, phase: str) -> float:
        """Time of ``phase`` per iteration as a percentage of the mean step time."""
        return 100.0 * self.phases[phase] / self.phases["step"]


def load(dataset: str, seed: int, quick: bool) -> tuple[Any, str]:
    """The data set (a ``SemiSupervisedData``) and the model name for it."""
    if dataset == "digits":
        return load_digits_data(n_labels=100, seed=seed), "mlp"
    if dataset == "fashion-mnist":
        data = load_fashion_mnist(n_labels=1000, flatten=True, seed=seed)
        if quick:  # a small slice: the smoke run should take seconds
            data.x_unlabeled, data.x_test, data.y_test = data.x_unlabeled[:2000], data.x_test[:500], data.y_test[:500]
        return data, "mnist-mlp"
    raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")


def run_one(data: Any, model_name: str, dataset: str, method: str, args: argparse.Namespace) -> Run:
    """Train ``method`` for ``args.iterations`` iterations with the phase timer and the read counter."""
    seed_everything(args.seed)
    shape = tuple(data.x_labeled.shape[1:])
    model = build_model(model_name, input_shape=shape, n_classes=10)
    trainer = Trainer(
        model,
        data,
        method=method,
        iterations=args.iterations,
        eval_every=args.eval_every,
        log_every=args.log_every,
        batch_size=32,
        unlabeled_batch_size=128,
        lr=1e-3,
        seed=args.seed,
        device=args.device,
        progress=False,
    )
    timer = PhaseTimer()
    if trainer.device.type == "cuda":
        timer.sync = functools.partial(torch.cuda.synchronize, trainer.device)
    reads = HostReadCounter()
    trainer.next_batch = reads.wrap(timer.wrap("data", trainer.next_batch))  # type: ignore[method-assign]
    trainer.train_step = reads.wrap(timer.wrap("step", trainer.train_step))  # type: ignore[method-assign]
    trainer._evaluate_held_out = timer.wrap("eval", trainer._evaluate_held_out)  # type: ignore[method-assign]
    trainer._call = timer.wrap("logging", trainer._call)  # type: ignore[method-assign]
    for acc in (trainer._log_acc, trainer._eval_acc):
        acc.add = timer.wrap("logging", acc.add)  # type: ignore[method-assign]
        acc.means = timer.wrap("logging", acc.means)  # type: ignore[method-assign]
    fit = timer.wrap("other", trainer.fit)
    with reads.patched():
        t0 = time.perf_counter()
        result = fit()
        wall = time.perf_counter() - t0
    return Run(
        dataset=dataset,
        method=method,
        iterations=result.steps,
        wall_s=wall,
        phases=dict(timer.totals),
        test_error=result.final.get("test_error", float("nan")),
        eps=result.eps,
        host_reads_per_iter=reads.count / max(result.steps, 1),
        host_reads_where=dict(reads.where),
    )


def format_table(runs: Sequence[Run]) -> str:
    """The markdown table of the runs."""
    head = (
        "| data | method | iters | wall s | step ms | data ms | eval s | logging s | other s "
        "| data % of step | logging % of step | host reads / iter | test error | eps |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in runs:
        eps = "n/a" if r.eps is None else f"{r.eps:.3g}"
        lines.append(
            f"| {r.dataset} | {r.method} | {r.iterations} | {r.wall_s:.1f} | {r.step_ms:.2f} "
            f"| {r.phases['data'] / r.iterations * 1e3:.3f} | {r.phases['eval']:.2f} | {r.phases['logging']:.3f} "
            f"| {r.phases['other']:.3f} | {r.percent_of_step('data'):.2f} | {r.percent_of_step('logging'):.2f} "
            f"| {r.host_reads_per_iter:.2f} | {r.test_error:.4f} | {eps} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: digits, fashion-mnist")
    p.add_argument("--methods", default="supervised,vat", help="comma-separated trainer methods")
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="training device (cpu, cuda, auto)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="digits only, 20 iterations: a smoke run")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and return the runs."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.quick:
        args.datasets = args.datasets if "--datasets" in (argv or sys.argv) else "digits"
        args.iterations, args.eval_every, args.log_every = 20, 10, 5
    torch.set_num_threads(args.threads)
    datasets = [d for d in args.datasets.split(",") if d]
    for d in datasets:
        if d not in DATASETS:
            raise SystemExit(f"--datasets: unknown data set {d!r}; choose from {', '.join(DATASETS)}")
    runs = []
    for dataset in datasets:
        data, model_name = load(dataset, args.seed, args.quick)
        for method in (m for m in args.methods.split(",") if m):
            runs.append(run_one(data, model_name, dataset, method, args))
    print(
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')} | {platform.node()} | {platform.machine()} | "
        f"torch {torch.__version__} | device {args.device} | threads {torch.get_num_threads()} | "
        f"iterations {args.iterations} | eval every {args.eval_every} | log every {args.log_every}"
    )
    table = format_table(runs)
    print(table)
    for r in runs:
        if r.host_reads_where:
            print(f"host reads per iteration, {r.dataset}/{r.method}: {r.host_reads_where} over {r.iterations}")
    return {"runs": runs, "table": table}


if __name__ == "__main__":
    main()
