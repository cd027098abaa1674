"""Soak test: a long CPU run of many small training steps, with its memory measured.

Trains VAT on two moons (a small BatchNorm MLP, 32 labeled + 128 unlabeled rows per step)
for many thousands of iterations through the full trainer, with the metrics file, periodic
checkpoints and evaluations on, and samples every ``--every`` iterations: the resident set
size (RSS) of the process, the number of Python objects the garbage collector tracks and the
number of live tensors among them. A leak (retained autograd graphs, logged tensors, growing
buffers) shows as a steady rise of these numbers after the warm-up.

    python benchmarks/soak.py --iters 20000 --every 1000 --threads 1 --output /tmp/soak.txt

Prints a markdown table and a summary line (growth after the warm-up sample, per 1000
iterations), and writes them to ``--output``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from sklearn.datasets import make_moons
from torch import nn

import torchvat
from torchvat.train import Callback, Trainer


def rss_mib() -> float:
    """Current resident set size in MiB (Linux ``/proc``; else the peak from ``getrusage``)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class MemorySampler(Callback):
    """Record (step, seconds, RSS MiB, Python objects, live tensors) every ``every`` iterations."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.rows: list[tuple[int, float, float, int, int]] = []
        self.start = time.perf_counter()

    def sample(self, step: int) -> None:
        gc.collect()
        objects = gc.get_objects()
        n_objects = len(objects)
        with warnings.catch_warnings():  # isinstance on deprecated torch aliases warns
            warnings.simplefilter("ignore")
            tensors = sum(1 for o in objects if isinstance(o, torch.Tensor))
        del objects
        self.rows.append((step, time.perf_counter() - self.start, rss_mib(), n_objects, tensors))

    def on_train_begin(self, **kwargs) -> None:
        self.start = time.perf_counter()
        self.sample(kwargs["trainer"].step)

    def on_step_end(self, **kwargs) -> None:
        if kwargs["step"] % self.every == 0:
            self.sample(kwargs["step"])


def run(iters: int, every: int, method: str, seed: int) -> tuple[MemorySampler, float]:
    x, y = make_moons(2000, noise=0.1, random_state=seed)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    labeled = torch.cat([torch.nonzero(y[:1500] == c)[:16, 0] for c in (0, 1)])
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(2, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2)
    )
    sampler = MemorySampler(every)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model,
            x_labeled=x[labeled],
            y_labeled=y[labeled],
            x_unlabeled=x[:1500],
            x_test=x[1500:],
            y_test=y[1500:],
            method=method,
            eps=0.3,
            iterations=iters,
            batch_size=32,
            unlabeled_batch_size=128,
            log_every=50,
            eval_every=max(every // 2, 1),
            checkpoint_every=every,
            out_dir=out,
            progress=False,
            seed=seed,
            callbacks=[sampler],
        )
        start = time.perf_counter()
        trainer.fit()
        seconds = time.perf_counter() - start
    return sampler, seconds


def report(sampler: MemorySampler, seconds: float, args: argparse.Namespace) -> str:
    rows = sampler.rows
    lines = [
        f"torchvat {torchvat.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, {torch.get_num_threads()} thread(s); {dt.date.today().isoformat()}",
        f"command: python benchmarks/soak.py --iters {args.iters} --every {args.every} --method {args.method} "
        f"--threads {args.threads}",
        "",
        "| iteration | seconds | RSS (MiB) | RSS change (MiB) | Python objects | live tensors |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    base = rows[1] if len(rows) > 1 else rows[0]  # after the first block of iterations (warm-up)
    for step, secs, rss, objects, tensors in rows:
        lines.append(f"| {step} | {secs:.1f} | {rss:.1f} | {rss - base[2]:+.1f} | {objects} | {tensors} |")
    end = rows[-1]
    span = max(end[0] - base[0], 1)
    lines += [
        "",
        f"{args.iters} iterations in {seconds:.1f} s ({1000 * seconds / args.iters:.2f} ms per iteration). "
        f"From iteration {base[0]} to {end[0]}: RSS {end[2] - base[2]:+.1f} MiB "
        f"({1000 * (end[2] - base[2]) / span:+.3f} MiB per 1000 iterations), Python objects "
        f"{end[3] - base[3]:+d}, live tensors {end[4] - base[4]:+d}; peak RSS "
        f"{max(r[2] for r in rows):.1f} MiB.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20000, help="training iterations")
    parser.add_argument("--every", type=int, default=1000, help="sample memory every N iterations")
    parser.add_argument("--method", default="vat", help="training method")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sampler, seconds = run(args.iters, args.every, args.method, args.seed)
    text = report(sampler, seconds, args)
    print(text, end="")
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
