"""VATClassifier against scikit-learn's semi-supervised and supervised classifiers.

Every method sees the same splits: for each seed, a stratified 70/30 train/test split, then a
class-balanced choice of ``n_labels`` training rows that keep their labels; the other training
rows are unlabeled (``y == -1``). Semi-supervised methods fit on all training rows, the
supervised ``MLPClassifier`` on the labeled rows only; accuracy is measured on the test rows
(inductive). Every model is a ``Pipeline(StandardScaler(), model)``; the scaler sees the
training rows. ``VATClassifier`` runs with its defaults (only ``random_state`` and ``device``
set), the same on every dataset.

Competitors' settings: ``LabelSpreading(kernel="knn", n_neighbors=10)`` (the default RBF
kernel with ``gamma=20`` spreads nothing on standardized data of more than a few features),
``SelfTrainingClassifier(SVC(probability=True))`` and
``SelfTrainingClassifier(LogisticRegression(max_iter=1000))`` with their default threshold
0.75, ``MLPClassifier(max_iter=2000)``.

Usage::

    python benchmarks/sklearn_bench.py --threads 2            # full table, 5 seeds
    python benchmarks/sklearn_bench.py --seeds 1 --datasets wine  # smoke run
    python benchmarks/sklearn_bench.py --vat-params '{"alpha": 2.0}'   # try other defaults

Prints two markdown tables: test accuracy (mean +- std over the seeds) and fit time.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from collections.abc import Callable
from datetime import date
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.datasets import load_breast_cancer, load_digits, load_wine, make_moons
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from torchvat.sklearn import VATClassifier

# (column name, loader, number of labeled training rows)
DATASETS: list[tuple[str, Callable[[], tuple[np.ndarray, np.ndarray]], int]] = [
    ("digits/50", lambda: load_digits(return_X_y=True), 50),
    ("digits/100", lambda: load_digits(return_X_y=True), 100),
    ("digits/200", lambda: load_digits(return_X_y=True), 200),
    ("breast_cancer/20", lambda: load_breast_cancer(return_X_y=True), 20),
    ("wine/15", lambda: load_wine(return_X_y=True), 15),
    ("moons/10", lambda: make_moons(600, noise=0.15, random_state=0), 10),
]


def make_methods(seed: int, vat_params: dict[str, Any]) -> dict[str, tuple[BaseEstimator, bool]]:
    """Name -> (pipeline, whether it trains on unlabeled rows too)."""
    return {
        "VATClassifier": (
            make_pipeline(StandardScaler(), VATClassifier(random_state=seed, device="cpu", **vat_params)),
            True,
        ),
        "LabelSpreading (knn)": (make_pipeline(StandardScaler(), LabelSpreading(kernel="knn", n_neighbors=10)), True),
        "SelfTraining(SVC)": (
            make_pipeline(StandardScaler(), SelfTrainingClassifier(SVC(probability=True, random_state=seed))),
            True,
        ),
        "SelfTraining(LogReg)": (
            make_pipeline(StandardScaler(), SelfTrainingClassifier(LogisticRegression(max_iter=1000))),
            True,
        ),
        "MLPClassifier (labeled only)": (
            make_pipeline(StandardScaler(), MLPClassifier(max_iter=2000, random_state=seed)),
            False,
        ),
    }


def balanced_labels(y: np.ndarray, n_labels: int, rng: np.random.RandomState) -> np.ndarray:
    """Indices of ``n_labels`` rows, as equal a number per class as possible."""
    classes = np.unique(y)
    per_class = [n_labels // len(classes) + (i < n_labels % len(classes)) for i in range(len(classes))]
    chosen = [rng.choice(np.flatnonzero(y == c), k, replace=False) for c, k in zip(classes, per_class, strict=True)]
    return np.sort(np.concatenate(chosen))


def split(X: np.ndarray, y: np.ndarray, n_labels: int, seed: int) -> tuple[np.ndarray, ...]:
    """Train rows, their semi-supervised labels (-1 = unlabeled), test rows and labels."""
    x_tr, x_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
    idx = balanced_labels(y_tr, n_labels, np.random.RandomState(seed))
    y_semi = np.full_like(y_tr, -1)
    y_semi[idx] = y_tr[idx]
    return x_tr, y_semi, x_te, y_te


def run(seeds: int, vat_params: dict[str, Any], datasets: list[str] | None, methods: list[str] | None) -> dict:
    """Accuracy and fit time of every method on every dataset and seed."""
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for name, loader, n_labels in DATASETS:
        if datasets and name not in datasets:
            continue
        X, y = loader()
        X = X.astype(np.float64)
        for seed in range(seeds):
            x_tr, y_semi, x_te, y_te = split(X, y, n_labels, seed)
            labeled = y_semi != -1
            for method, (model, semi) in make_methods(seed, vat_params).items():
                if methods and method not in methods:
                    continue
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if semi:
                        model.fit(x_tr, y_semi)
                    else:
                        model.fit(x_tr[labeled], y_semi[labeled])
                elapsed = time.perf_counter() - start
                acc = float((model.predict(x_te) == y_te).mean())
                results.setdefault((method, name), []).append((acc, elapsed))
    return results


def table(results: dict, column_names: list[str], row_names: list[str], which: int) -> str:
    """A markdown table; ``which`` 0 is accuracy (best in bold), 1 is fit time."""
    header = "| method | " + " | ".join(column_names) + " |"
    lines = [header, "|" + "---|" * (len(column_names) + 1)]
    best = {}
    for col in column_names:
        means = [np.mean([r[0] for r in results[(m, col)]]) for m in row_names if (m, col) in results]
        best[col] = max(means) if means else None
    for m in row_names:
        cells = []
        for col in column_names:
            vals = [r[which] for r in results.get((m, col), [])]
            if not vals:
                cells.append("-")
            elif which == 0:
                mean, std = 100 * np.mean(vals), 100 * np.std(vals)
                cell = f"{mean:.1f} ± {std:.1f}"
                cells.append(f"**{cell}**" if np.isclose(np.mean(vals), best[col]) else cell)
            else:
                cells.append(f"{np.mean(vals):.2f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (splits); default 5")
    parser.add_argument("--threads", type=int, default=2, help="torch and BLAS threads; default 2")
    parser.add_argument("--vat-params", default="{}", help="JSON dict of VATClassifier parameters to try")
    parser.add_argument("--datasets", nargs="*", help="subset of the columns")
    parser.add_argument("--methods", nargs="*", help="subset of the rows")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    vat_params = json.loads(args.vat_params)
    with threadpool_limits(args.threads):
        start = time.perf_counter()
        results = run(args.seeds, vat_params, args.datasets, args.methods)
        total = time.perf_counter() - start
    columns = [name for name, _, _ in DATASETS if any(k[1] == name for k in results)]
    rows = list(make_methods(0, vat_params))
    rows = [r for r in rows if any(k[0] == r for k in results)]
    print(
        f"# sklearn_bench: {date.today().isoformat()}, {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, torch {torch.__version__}, {args.seeds} seeds, {total:.0f} s"
    )
    if vat_params:
        print(f"VATClassifier parameters: {vat_params}")
    print("\nTest accuracy (%), mean ± std over seeds (best in bold):\n")
    print(table(results, columns, rows, 0))
    print("\nFit time (s), mean over seeds:\n")
    print(table(results, columns, rows, 1))


if __name__ == "__main__":
    main()
