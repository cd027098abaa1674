"""One column of ``sklearn_bench.py``, VATClassifier with one setting changed at a time, over seeds.

Each variant is a JSON object: ``name``, ``params`` (VATClassifier parameters), and optionally
``eps_factor`` (eps = factor x the eps the engine derives on the same split) and ``norm``
(``"batch"``, ``"layer"`` or ``"none"``: the engine's vector MLP, widths from
``scaled_hidden_sizes``, with that normalization after each hidden ``Linear``, given as
``module``), ``scaler`` (``"standard"``, ``"minmax"`` or ``"none"``: replaces the column's
scaler) and ``min_std`` (drop the features whose standard deviation over the training rows,
before scaling, is below it) and ``drop_beyond`` (leave out of the training rows the unlabeled ones
holding a value more than that many standard deviations from its column's mean after the column's
scaler, fitted on every training row; the scaler is then applied before the pipeline, which gets
none). The splits, the scaler and the columns are ``sklearn_bench.py``'s.

Usage::

    python benchmarks/estimator_variants.py digits/50 --seeds 5 \\
        '{"name": "default"}' '{"name": "supervised", "params": {"method": "supervised"}}' \\
        '{"name": "random perturbations", "params": {"n_power": 0}}' '{"name": "eps x0.5", "eps_factor": 0.5}' \\
        '{"name": "LayerNorm", "norm": "layer"}' \\
        '{"name": "LayerNorm, supervised", "norm": "layer", "params": {"method": "supervised"}}'
    python benchmarks/estimator_variants.py digits-raw/50 '{"name": "MinMaxScaler", "scaler": "minmax"}' \\
        '{"name": "near-constant pixels dropped", "min_std": 1.0, "scaler": "standard"}'
    python benchmarks/estimator_variants.py digits/50 '{"name": "beyond 5 std left out", "drop_beyond": 5}'

Prints one line per variant: test accuracy (%), mean +- std over the seeds, then each seed's.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn_bench import DATASETS, _vat, split
from threadpoolctl import threadpool_limits
from torch import nn

from torchvat.models import MLP, scaled_hidden_sizes
from torchvat.sklearn import VATClassifier


def vector_mlp(norm: str) -> Callable[[int, int], nn.Module]:
    """``module`` for VATClassifier: the engine's MLP widths with ``norm`` after each hidden Linear.

    :class:`torchvat.models.MLP` with ``batch_norm`` on or off; for ``"layer"``, its BatchNorm layers
    replaced by LayerNorm of the same width.
    """
    if norm not in ("batch", "layer", "none"):
        raise ValueError(f"norm must be 'batch', 'layer' or 'none', got {norm!r}")

    def build(n_features: int, n_outputs: int) -> nn.Module:
        model = MLP(n_features, n_outputs, hidden_sizes=scaled_hidden_sizes(n_features), batch_norm=norm != "none")
        if norm == "layer":
            for i, layer in enumerate(model.features):
                if isinstance(layer, nn.BatchNorm1d):
                    model.features[i] = nn.LayerNorm(layer.num_features)
        return model

    return build


_SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler}


def pipeline(seed: int, params: dict[str, Any], scale: bool, scaler: str | None) -> BaseEstimator:
    """``sklearn_bench``'s pipeline of the column, or VATClassifier after ``scaler`` when it is given."""
    if scaler is None:
        return _vat(seed, params, scale)
    if scaler != "none" and scaler not in _SCALERS:
        raise ValueError(f"scaler must be 'standard', 'minmax' or 'none', got {scaler!r}")
    clf = VATClassifier(random_state=seed, device="cpu", **params)
    steps = [] if scaler == "none" else [("scaler", _SCALERS[scaler]())]
    return Pipeline([*steps, ("vatclassifier", clf)])


def kept_features(x_train: np.ndarray, min_std: float | None) -> np.ndarray:
    """The columns whose standard deviation over ``x_train`` is at least ``min_std`` (all for ``None``)."""
    if min_std is None:
        return np.ones(x_train.shape[1], dtype=bool)
    return np.asarray(x_train.std(axis=0) >= min_std)


def far_unlabeled_rows(x_train: np.ndarray, y_semi: np.ndarray, beyond: float | None) -> np.ndarray:
    """The unlabeled rows (``y_semi == -1``) of ``x_train`` with a value more than ``beyond`` from 0.

    ``x_train`` is already scaled (a standardized column's values are its standard deviations from
    its mean); ``None`` marks no row.
    """
    if beyond is None:
        return np.zeros(len(x_train), dtype=bool)
    if not beyond > 0:
        raise ValueError(f"drop_beyond must be a number > 0, got {beyond!r}")
    return np.asarray((np.abs(x_train).max(axis=1) > beyond) & (y_semi == -1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=[d.name for d in DATASETS])
    parser.add_argument("variants", nargs="+", help="JSON objects: name, params, eps_factor")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-iter", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = {d.name: d for d in DATASETS}[args.dataset]
    variants = [json.loads(v) for v in args.variants]
    with threadpool_limits(args.threads):
        for variant in variants:
            accuracies = []
            start = time.perf_counter()
            for seed in range(args.seeds):
                x_tr, y_semi, x_te, y_te = split(data, seed)
                keep = kept_features(x_tr, variant.get("min_std"))
                x_tr, x_te = x_tr[:, keep], x_te[:, keep]
                scaler = variant.get("scaler")
                if "drop_beyond" in variant:
                    # scale on every training row, then leave the far unlabeled rows out of the fit
                    fitted = pipeline(seed, {}, data.scale, scaler)[:-1]
                    if len(fitted):
                        fitted.fit(x_tr)
                        x_tr, x_te = fitted.transform(x_tr), fitted.transform(x_te)
                    far = far_unlabeled_rows(x_tr, y_semi, variant["drop_beyond"])
                    x_tr, y_semi, scaler = x_tr[~far], y_semi[~far], "none"
                params = {"max_iter": args.max_iter, **variant.get("params", {})}
                if "norm" in variant:
                    params["module"] = vector_mlp(variant["norm"])
                if "eps_factor" in variant:
                    # the engine's eps on this split: fit the scaler the pipeline would fit
                    model = pipeline(seed, {"max_iter": 1}, data.scale, scaler)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model.fit(x_tr, y_semi)
                    assert isinstance(model[-1], VATClassifier)
                    params["eps"] = variant["eps_factor"] * model[-1].eps_
                model = pipeline(seed, params, data.scale, scaler)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.fit(x_tr, y_semi)
                accuracies.append(100 * float((model.predict(x_te) == y_te).mean()))
            per_seed = " / ".join(f"{a:.1f}" for a in accuracies)
            print(
                f"{data.name} | {variant['name']} | {np.mean(accuracies):.1f} ± {np.std(accuracies):.1f} | {per_seed} "
                f"| {time.perf_counter() - start:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
