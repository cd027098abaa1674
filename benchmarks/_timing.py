"""What the per-step cost scripts share: their options and the interleaved timing of steps."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping

import torch


def cost_args(description: str) -> argparse.Namespace:
    """Parse a per-step cost script's options, set torch's threads and print the run's settings.

    The options: feature counts, steps a repetition, repetitions, threads, labeled and unlabeled
    rows a batch.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--features", type=int, nargs="+", default=[64, 784])
    parser.add_argument("--steps", type=int, default=100, help="steps a timed repetition")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--labeled", type=int, default=32)
    parser.add_argument("--unlabeled", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batches {args.labeled} + {args.unlabeled}")
    return args


def interleaved_medians(steps: Mapping[str, Callable[[], None]], n_steps: int, repeats: int) -> dict[str, float]:
    """Median ms a step of each of ``steps``, timed in alternating order after 5 warm-up steps each.

    Each repetition times ``n_steps`` steps of every entry; odd repetitions go in reverse order, so
    a change of load hits every entry alike.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        for _ in range(5):
            step()  # warm-up
    names = list(steps)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            for _ in range(n_steps):
                steps[name]()
            times[name].append((time.perf_counter() - start) / n_steps * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}
