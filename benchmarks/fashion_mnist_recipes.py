"""Fashion-MNIST with the MNIST MLP: the TPAMI MNIST setting against the MLP defaults and supervised training.

Issue 18, item 1. Every run uses the full 60,000 training images of Fashion-MNIST (Debian's
``dataset-fashion-mnist`` IDX files, read by :func:`torchvat.data.load_fashion_mnist`), the
10,000 test images, the ``mnist-mlp`` network (784-1200-600-300-150-10 with BatchNorm) and
``--iterations`` iterations. Rows:

* ``tpami``: the ``mnist-100`` recipe (the TPAMI 2018 MNIST setting: Gaussian noise sd 0.5 on
  each hidden layer, eps = 5.0, and the recipe's batches, optimizer and schedule), read from the
  recipe so that the two never drift apart;
* ``defaults``: VAT with the MLP's defaults (no noise) and torchvat's default eps (derived from
  the data), the same batches and optimizer;
* ``supervised``: the ``tpami`` network with its noise, trained on the labeled images only.

Label budgets: 100 labels with ``--seeds`` seeds (default 3) and 1000 labels with one seed.
The table gives the test error of the final model and the wall time of each run.

Full run (about 10 CPU-minutes a run on this machine's CPU, 12 runs)::

    .venv/bin/python benchmarks/fashion_mnist_recipes.py

The seeds of the 100-label runs can be split across invocations (``--first-seed 1 --seeds 2``
runs seeds 1 and 2).

Smoke run::

    .venv/bin/python benchmarks/fashion_mnist_recipes.py --iterations 50 --seeds 1 --rows tpami,supervised

The TPAMI setting to completion (the recipe's 48,000 iterations) on a GPU, from IDX files in a
given folder, the table also written to a file (``benchmarks/gpu_checks.sh``, section 5)::

    python benchmarks/fashion_mnist_recipes.py --rows tpami --seeds 1 --labels 100 --iterations recipe \
        --device cuda --data-root DIR --table OUT/fashion_mnist_tpami.md

Each evaluation (every fifth of the run) prints its step, test error and elapsed time, so a run
cut short still says how far it came.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import torch

from torchvat.data import load_fashion_mnist
from torchvat.models import build_model
from torchvat.recipes import load_recipe
from torchvat.train import Callback, Trainer, seed_everything

ROWS = ("tpami", "defaults", "supervised")
_TRAIN_KEYS = ("batch_size", "unlabeled_batch_size", "lr", "schedule", "decay_fraction", "n_power", "alpha")


@dataclass
class Run:
    """One training run's outcome."""

    row: str
    n_labels: int
    seed: int
    iterations: int
    eps: float | None
    test_error: float
    wall_s: float


def settings(row: str, iterations: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model keyword arguments and the trainer options of ``row``."""
    recipe = load_recipe("mnist-100")
    train = {k: recipe.train[k] for k in _TRAIN_KEYS if k in recipe.train}
    train["iterations"] = iterations
    train["eval_every"] = max(iterations // 5, 1)
    tpami_model = dict(recipe.model.get("kwargs", {}))
    if row == "tpami":
        return tpami_model, {**train, "method": recipe.train["method"], "eps": recipe.train["eps"]}
    if row == "defaults":
        return {}, {**train, "method": "vat"}  # eps=None: derived from the data
    if row == "supervised":
        return tpami_model, {**train, "method": "supervised"}
    raise ValueError(f"row must be one of {', '.join(ROWS)}, got {row!r}")


class PrintEvaluations(Callback):
    """Print each evaluation's step, test error and elapsed time (a run cut short still reports)."""

    def __init__(self, label: str) -> None:
        self.label, self.t0 = label, time.perf_counter()

    def on_eval_end(self, **kwargs: Any) -> None:
        """Print one line."""
        metrics, trainer = kwargs["metrics"], kwargs["trainer"]
        error = 100 * metrics.get("test_error", float("nan"))
        print(
            f"  {self.label}: step {kwargs['step']}/{trainer.config.iterations} test error {error:.2f}% "
            f"after {time.perf_counter() - self.t0:.0f} s",
            flush=True,
        )


def run_one(row: str, n_labels: int, seed: int, args: argparse.Namespace) -> Run:
    """Train one row on one label split and seed."""
    data = load_fashion_mnist(args.data_root, n_labels=n_labels, flatten=True, seed=seed)
    model_kwargs, options = settings(row, args.iterations)
    seed_everything(seed)
    model = build_model("mnist-mlp", input_shape=tuple(data.x_labeled.shape[1:]), n_classes=10, **model_kwargs)
    progress = PrintEvaluations(f"{row} labels={n_labels} seed={seed}")
    trainer = Trainer(
        model, data, seed=seed, device=args.device, progress=False, log_every=50, callbacks=[progress], **options
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - t0
    return Run(row, n_labels, seed, result.steps, result.eps, result.final.get("test_error", float("nan")), wall)


def _iterations(text: str) -> int:
    """``--iterations``: a number, or ``recipe`` for the mnist-100 recipe's own."""
    if text == "recipe":
        return int(load_recipe("mnist-100").train["iterations"])
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'recipe', got {text!r}") from None


def table(runs: list[Run]) -> str:
    """A Markdown table of the runs, with the mean error of each row and label budget."""
    lines = [
        "| row | labels | seed | iterations | eps | test error (%) | time (s) | ms per iteration |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        eps, err = ("-" if r.eps is None else f"{r.eps:.3g}"), f"{100 * r.test_error:.2f}"
        per = 1000 * r.wall_s / max(r.iterations, 1)
        lines.append(
            f"| {r.row} | {r.n_labels} | {r.seed} | {r.iterations} | {eps} | {err} | {r.wall_s:.0f} | {per:.2f} |"
        )
    lines += ["", "| row | labels | runs | mean test error (%) |", "|---|---:|---:|---:|"]
    for row in dict.fromkeys(r.row for r in runs):
        for n in dict.fromkeys(r.n_labels for r in runs):
            errs = [r.test_error for r in runs if r.row == row and r.n_labels == n]
            if errs:
                lines.append(f"| {row} | {n} | {len(errs)} | {100 * sum(errs) / len(errs):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run every (row, labels, seed) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--iterations",
        type=_iterations,
        default=10_000,
        help="iterations per run, or 'recipe': the mnist-100 recipe's (48000) (default 10000)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the 100-label runs (default 3)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows (default {','.join(ROWS)})")
    parser.add_argument(
        "--labels", default="100,1000", help="comma-separated label budgets (default 100,1000; 1000 with one seed)"
    )
    parser.add_argument(
        "--first-seed", type=int, default=0, help="first seed of the 100-label runs (default 0: seeds 0 .. --seeds - 1)"
    )
    parser.add_argument("--device", default="cpu", help="training device (default cpu)")
    parser.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="folder holding the Fashion-MNIST IDX files (default: $TORCHVAT_DATA, then Debian's "
        "/usr/share/datasets/fashion-mnist, then ~/.cache/torchvat/data)",
    )
    parser.add_argument("--table", default=None, metavar="FILE", help="also write the Markdown table to FILE")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.seeds < 1 or args.first_seed < 0:
        parser.error(
            f"--iterations and --seeds must be >= 1 and --first-seed >= 0, got {args.iterations}, {args.seeds} "
            f"and {args.first_seed}"
        )
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"--rows must name rows among {', '.join(ROWS)}, got {', '.join(unknown)}")
    budgets = [int(n) for n in args.labels.split(",") if n.strip()]
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    runs = []
    for n_labels in budgets:
        seeds = range(args.first_seed, args.first_seed + args.seeds) if n_labels == 100 else range(1)
        for seed in seeds:
            for row in rows:
                run = run_one(row, n_labels, seed, args)
                print(
                    f"{row} labels={n_labels} seed={seed}: {100 * run.test_error:.2f}% in {run.wall_s:.0f} s",
                    flush=True,
                )
                runs.append(run)
    print()
    text = table(runs)
    print(text)
    if args.table is not None:
        with open(args.table, "w", encoding="utf-8") as f:
            f.write(f"device {args.device}, torch {torch.__version__}\n\n{text}\n")


if __name__ == "__main__":
    main()
