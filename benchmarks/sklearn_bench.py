"""VATClassifier against scikit-learn's semi-supervised and supervised classifiers.

Every method sees the same splits: for each seed, a stratified 70/30 train/test split, then a
class-balanced choice of ``n_labels`` training rows that keep their labels; the other training
rows are unlabeled (``y == -1``). Fashion-MNIST is the exception: a fixed, seeded subset of
10,000 training images, reduced to 50 PCA components and standardized on that subset (the
images' labels are not used for this), tested on the official 10,000 test images; each seed
draws its own labeled rows. Semi-supervised methods fit on all training rows, the supervised
``MLPClassifier`` on the labeled rows only; accuracy is measured on the test rows
(inductive). Every model is a ``Pipeline(StandardScaler(), model)``, except in the ``raw``
columns (no scaler: the features as the loader gives them); the scaler sees the training rows.
``VATClassifier`` runs with its defaults (only ``random_state`` and ``device`` set), the same on
every dataset: the engine's network, eps rule, unlabeled pool, schedule and budget.

Competitors' settings: ``LabelSpreading(kernel="knn", n_neighbors=10)`` (the default RBF
kernel with ``gamma=20`` spreads nothing on standardized data of more than a few features),
``SelfTrainingClassifier(SVC(probability=True))`` and
``SelfTrainingClassifier(LogisticRegression(max_iter=1000))`` with their default threshold
0.75, ``MLPClassifier(max_iter=2000)``.

``--sensitivity`` adds VATClassifier rows with one setting changed: eps x0.5 and x2 (of the eps
the default derived on the same split), ``hidden_layer_sizes=(256, 256)`` (with its own
supervised baseline), three times the iterations (with its own supervised baseline) and
``method="vat+ent"``; each regularized row is compared with the supervised row of the same
network and budget (a cell below it is marked with ``<``).

Usage::

    python benchmarks/sklearn_bench.py --threads 1                 # main table, 5 seeds
    python benchmarks/sklearn_bench.py --seeds 1 --datasets wine   # smoke run
    python benchmarks/sklearn_bench.py --sensitivity --seeds 3     # with the sensitivity table
    python benchmarks/sklearn_bench.py --vat-params '{"alpha": 2.0}'   # try other settings

``--max-iter`` scales the budget of every VATClassifier row down (for a quick look; the printed
header says so: such a table is not the defaults'). ``--jsonl FILE`` appends one line per fit, so
a long run can be read (and resumed with ``--skip-done``) while it goes on.

Prints markdown tables: test accuracy (mean +- std over the seeds) and fit time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.datasets import load_breast_cancer, load_digits, load_wine, make_classification, make_moons
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from torchvat.data.fashion_mnist import find_fashion_mnist, load_idx_directory
from torchvat.sklearn import VATClassifier

#: images of the Fashion-MNIST training subset
FASHION_TRAIN = 10_000
FASHION_COMPONENTS = 50


@cache
def fashion_pca() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST (the project's IDX loader), 50 PCA components standardized on a 10,000-image subset."""
    arrays = load_idx_directory(find_fashion_mnist())
    x_train = arrays["x_train"].reshape(len(arrays["x_train"]), -1).astype(np.float64) / 255.0
    x_test = arrays["x_test"].reshape(len(arrays["x_test"]), -1).astype(np.float64) / 255.0
    subset = np.sort(np.random.RandomState(0).choice(len(x_train), FASHION_TRAIN, replace=False))
    reduce = make_pipeline(PCA(FASHION_COMPONENTS, random_state=0), StandardScaler()).fit(x_train[subset])
    return (
        reduce.transform(x_train[subset]),
        arrays["y_train"][subset].astype(np.int64),
        reduce.transform(x_test),
        arrays["y_test"].astype(np.int64),
    )


def _classification(clusters_per_class: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """2000 rows, 50 features, 10 informative, 10 classes; scikit-learn's defaults otherwise (2 clusters a class)."""
    return make_classification(
        2000, n_features=50, n_informative=10, n_classes=10, n_clusters_per_class=clusters_per_class, random_state=0
    )


def _separated() -> tuple[np.ndarray, np.ndarray]:
    """2000 rows, 30 features (10 informative, 5 redundant), 5 classes of one cluster each, ``class_sep=2``."""
    return make_classification(
        2000,
        n_features=30,
        n_informative=10,
        n_redundant=5,
        n_classes=5,
        n_clusters_per_class=1,
        class_sep=2.0,
        random_state=1,
    )


@dataclass(frozen=True)
class Dataset:
    """One column: a loader of ``(X, y)`` (split 70/30 per seed) or of a fixed train/test split."""

    name: str
    load: Callable[[], tuple[np.ndarray, ...]]
    n_labels: int
    scale: bool = True
    #: held out from tuning: look at it once, at the end
    held_out: bool = False


DATASETS = [
    Dataset("digits-raw/50", lambda: load_digits(return_X_y=True), 50, scale=False),
    Dataset("digits-raw/100", lambda: load_digits(return_X_y=True), 100, scale=False),
    Dataset("digits-raw/200", lambda: load_digits(return_X_y=True), 200, scale=False),
    Dataset("digits/50", lambda: load_digits(return_X_y=True), 50),
    Dataset("digits/100", lambda: load_digits(return_X_y=True), 100),
    Dataset("digits/200", lambda: load_digits(return_X_y=True), 200),
    Dataset("fashion-pca/100", fashion_pca, 100),
    Dataset("fashion-pca/1000", fashion_pca, 1000),
    Dataset("wine/15", lambda: load_wine(return_X_y=True), 15),
    Dataset("moons/10", lambda: make_moons(600, noise=0.15, random_state=0), 10),
    Dataset("breast_cancer/20", lambda: load_breast_cancer(return_X_y=True), 20, held_out=True),
    Dataset("classification/100", _classification, 100, held_out=True),
    # with 2 clusters a class every method stays near chance (10%) at 100 labels; one cluster a class
    Dataset("classification-1c/100", lambda: _classification(1), 100, held_out=True),
    # added with the trimmed BatchNorm of the engine's MLP (2026-12-08), looked at once: 30 features,
    # 5 well separated classes of one cluster each, 50 labels
    Dataset("separated/50", _separated, 50, held_out=True),
]

MAIN_ROWS = [
    "VATClassifier",
    "LabelSpreading (knn)",
    "SelfTraining(SVC)",
    "SelfTraining(LogReg)",
    "MLPClassifier (labeled only)",
    "VATClassifier supervised",
]
#: sensitivity row -> (VATClassifier parameters, the supervised row of the same network and budget)
SENSITIVITY: dict[str, tuple[dict[str, Any], str]] = {
    "VATClassifier": ({}, "VATClassifier supervised"),
    "eps x0.5": ({"eps_factor": 0.5}, "VATClassifier supervised"),
    "eps x2": ({"eps_factor": 2.0}, "VATClassifier supervised"),
    "vat+ent": ({"method": "vat+ent"}, "VATClassifier supervised"),
    "(256, 256)": ({"hidden_layer_sizes": (256, 256)}, "(256, 256) supervised"),
    "(256, 256) supervised": ({"hidden_layer_sizes": (256, 256), "method": "supervised"}, ""),
    "3x iterations": ({"iter_factor": 3}, "3x iterations supervised"),
    "3x iterations supervised": ({"iter_factor": 3, "method": "supervised"}, ""),
    "VATClassifier supervised": ({"method": "supervised"}, ""),
}


def _vat(seed: int, params: dict[str, Any], scale: bool) -> BaseEstimator:
    clf = VATClassifier(random_state=seed, device="cpu", **params)
    return make_pipeline(StandardScaler(), clf) if scale else Pipeline([("vatclassifier", clf)])


def make_method(
    name: str, seed: int, scale: bool, vat_params: dict[str, Any], default_eps: float | None
) -> tuple[BaseEstimator, bool]:
    """The pipeline of row ``name`` and whether it trains on the unlabeled rows too."""

    def pipe(model: BaseEstimator) -> BaseEstimator:
        return make_pipeline(StandardScaler(), model) if scale else Pipeline([("model", model)])

    if name == "LabelSpreading (knn)":
        return pipe(LabelSpreading(kernel="knn", n_neighbors=10)), True
    if name == "SelfTraining(SVC)":
        return pipe(SelfTrainingClassifier(SVC(probability=True, random_state=seed))), True
    if name == "SelfTraining(LogReg)":
        return pipe(SelfTrainingClassifier(LogisticRegression(max_iter=1000))), True
    if name == "MLPClassifier (labeled only)":
        return pipe(MLPClassifier(max_iter=2000, random_state=seed)), False
    settings = dict(SENSITIVITY[name][0])
    params = dict(vat_params)
    factor = settings.pop("iter_factor", 1)
    if factor != 1 or "max_iter" in params:
        params["max_iter"] = factor * int(params.get("max_iter", VATClassifier().max_iter))
    eps_factor = settings.pop("eps_factor", None)
    if eps_factor is not None:
        if default_eps is None:
            raise RuntimeError(f"row {name!r} needs the default row's eps on the same split first")
        params["eps"] = eps_factor * default_eps
    params.update(settings)
    return _vat(seed, params, scale), True


def balanced_labels(y: np.ndarray, n_labels: int, rng: np.random.RandomState) -> np.ndarray:
    """Indices of ``n_labels`` rows, as equal a number per class as possible."""
    classes = np.unique(y)
    per_class = [n_labels // len(classes) + (i < n_labels % len(classes)) for i in range(len(classes))]
    chosen = [rng.choice(np.flatnonzero(y == c), k, replace=False) for c, k in zip(classes, per_class, strict=True)]
    return np.sort(np.concatenate(chosen))


def split(data: Dataset, seed: int) -> tuple[np.ndarray, ...]:
    """Train rows, their semi-supervised labels (-1 = unlabeled), test rows and labels."""
    arrays = data.load()
    if len(arrays) == 4:
        x_tr, y_tr, x_te, y_te = arrays
    else:
        X, y = arrays
        x_tr, x_te, y_tr, y_te = train_test_split(
            np.asarray(X, dtype=np.float64), y, test_size=0.3, stratify=y, random_state=seed
        )
    idx = balanced_labels(y_tr, data.n_labels, np.random.RandomState(seed))
    y_semi = np.full_like(y_tr, -1)
    y_semi[idx] = y_tr[idx]
    return x_tr, y_semi, x_te, y_te


def run(args: argparse.Namespace, vat_params: dict[str, Any], rows: list[str]) -> dict:
    """Accuracy and fit time of every row on every dataset and seed (appended to ``--jsonl``)."""
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    done: dict[tuple[str, str, int], float | None] = {}  # (row, dataset, seed) -> its eps
    if args.jsonl and args.skip_done and os.path.exists(args.jsonl):
        with open(args.jsonl) as f:
            for line in f:
                r = json.loads(line)
                if r.get("vat_params", {}) == vat_params and r.get("max_iter") == args.max_iter:
                    done[(r["row"], r["dataset"], r["seed"])] = r.get("eps")
                    results.setdefault((r["row"], r["dataset"]), []).append((r["accuracy"], r["seconds"]))
    by_name = {d.name: d for d in DATASETS}
    unknown = sorted(set(args.datasets or []) - set(by_name))
    if unknown:
        raise SystemExit(f"unknown dataset(s) {unknown}; known: {list(by_name)}")
    chosen = [by_name[n] for n in args.datasets] if args.datasets else DATASETS  # in the order given
    for seed in args.seed_list:
        for data in chosen:
            x_tr, y_semi, x_te, y_te = split(data, seed)
            labeled = y_semi != -1
            default_eps = None
            for row in rows:
                if (row, data.name, seed) in done:
                    if row == "VATClassifier":
                        default_eps = done[(row, data.name, seed)]
                    continue
                model, semi = make_method(row, seed, data.scale, vat_params, default_eps)
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if semi:
                        model.fit(x_tr, y_semi)
                    else:
                        model.fit(x_tr[labeled], y_semi[labeled])
                elapsed = time.perf_counter() - start
                acc = float((model.predict(x_te) == y_te).mean())
                eps = getattr(model[-1], "eps_", None)
                if row == "VATClassifier":
                    default_eps = eps
                results.setdefault((row, data.name), []).append((acc, elapsed))
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        record = {"row": row, "dataset": data.name, "seed": seed, "accuracy": acc, "seconds": elapsed}
                        record.update(eps=eps, vat_params=vat_params, max_iter=args.max_iter)
                        f.write(json.dumps(record) + "\n")
                print(f"{data.name} seed {seed} {row}: {100 * acc:.1f}% in {elapsed:.1f} s (eps {eps})", flush=True)
    return results


def table(results: dict, column_names: list[str], row_names: list[str], which: int, baselines: bool = False) -> str:
    """A markdown table; ``which`` 0 is accuracy (best in bold), 1 is fit time.

    With ``baselines`` a regularized row's cell whose mean is below the mean of the supervised
    row of the same network and budget (:data:`SENSITIVITY`) is marked with ``<``.
    """
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
                base = SENSITIVITY.get(m, ({}, ""))[1] if baselines else ""
                base_vals = [r[0] for r in results.get((base, col), [])]
                if base_vals and np.mean(vals) < np.mean(base_vals):
                    cell = "< " + cell
                cells.append(f"**{cell}**" if not baselines and np.isclose(np.mean(vals), best[col]) else cell)
            else:
                cells.append(f"{np.mean(vals):.2f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (splits); default 5")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed; default 0")
    parser.add_argument("--threads", type=int, default=2, help="torch and BLAS threads; default 2")
    parser.add_argument("--vat-params", default="{}", help="JSON dict of VATClassifier parameters to try")
    parser.add_argument("--max-iter", type=int, default=None, help="VATClassifier budget (default: its own)")
    parser.add_argument("--datasets", nargs="*", help=f"subset of the columns: {[d.name for d in DATASETS]}")
    parser.add_argument("--methods", nargs="*", help="subset of the rows")
    parser.add_argument("--sensitivity", action="store_true", help="add the sensitivity rows")
    parser.add_argument("--jsonl", help="append one JSON line per fit to this file")
    parser.add_argument("--skip-done", action="store_true", help="skip the fits --jsonl already holds")
    args = parser.parse_args(argv)
    args.seed_list = list(range(args.first_seed, args.first_seed + args.seeds))
    torch.set_num_threads(args.threads)
    vat_params = json.loads(args.vat_params)
    if args.max_iter is not None:
        vat_params["max_iter"] = args.max_iter
    rows = MAIN_ROWS + ([r for r in SENSITIVITY if r not in MAIN_ROWS] if args.sensitivity else [])
    if args.methods:
        rows = [r for r in rows if r in args.methods]
    if "eps x0.5" in rows or "eps x2" in rows:  # they scale the default's eps on the same split
        rows = ["VATClassifier"] + [r for r in rows if r != "VATClassifier"]
    with threadpool_limits(args.threads):
        start = time.perf_counter()
        results = run(args, vat_params, rows)
        total = time.perf_counter() - start
    columns = [d.name for d in DATASETS if any(k[1] == d.name for k in results)]  # the table's order
    n_seeds = {len(v) for v in results.values()}
    print(
        f"\n# sklearn_bench: {date.today().isoformat()}, {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, torch {torch.__version__}, seeds {args.seed_list} "
        f"(fits per cell: {sorted(n_seeds)}), {total:.0f} s"
    )
    if vat_params:
        print(f"VATClassifier parameters: {vat_params} (not its defaults)")
    main_rows = [r for r in MAIN_ROWS if any(k[0] == r for k in results)]
    print("\nTest accuracy (%), mean ± std over seeds (best in bold):\n")
    print(table(results, columns, main_rows, 0))
    print("\nFit time (s), mean over seeds:\n")
    print(table(results, columns, main_rows, 1))
    sens_rows = [r for r in SENSITIVITY if any(k[0] == r for k in results)]
    if args.sensitivity and sens_rows:
        print("\nSensitivity: VATClassifier test accuracy (%), one setting changed (< : below its supervised row):\n")
        print(table(results, columns, sens_rows, 0, baselines=True))


if __name__ == "__main__":
    main()
