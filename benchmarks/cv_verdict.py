"""Does cross-validation on the labels predict whether VAT beats supervised training on the test set?

For each column of ``sklearn_bench.py`` (the same splits) and seed, ``VATClassifier()`` and
``VATClassifier(method="supervised")`` are scored by ``cross_val_score`` with
:class:`torchvat.sklearn.LabeledKFold` on the training rows only (labeled rows folded, every
unlabeled row in every training fold), then fitted on all training rows and scored on the test
rows. The verdict "VAT helps" from cross-validation (its mean CV accuracy above supervised) is
compared with the test set's: what a user who has only their labels would conclude, against
the truth.

Usage::

    python benchmarks/cv_verdict.py --seeds 3 --max-iter 2000 --datasets digits/50 wine/15

Prints a markdown table (accuracy %, CV mean over the folds; test) and the agreement count.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from datetime import date

import numpy as np
import torch
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn_bench import DATASETS, _vat, split  # the same columns and splits
from threadpoolctl import threadpool_limits

from torchvat.sklearn import LabeledKFold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits/50", "wine/15", "digits/100", "moons/10"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-iter", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jsonl", default=None, help="append one line per (dataset, seed)")
    parser.add_argument(
        "--eps-factors",
        type=float,
        nargs="*",
        default=[],
        help="also choose eps among these multiples of the derived eps by GridSearchCV on the same folds",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    by_name = {d.name: d for d in DATASETS}
    unknown = sorted(set(args.datasets) - set(by_name))
    if unknown:
        raise SystemExit(f"unknown dataset(s) {unknown}; known: {list(by_name)}")
    print(
        f"# CV verdict, {date.today()}, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"max_iter {args.max_iter}, {args.folds} folds"
    )
    rows = []
    with threadpool_limits(args.threads):
        for data in (by_name[n] for n in args.datasets):
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                x_tr, y_semi, x_te, y_te = split(data, seed)
                start = time.perf_counter()
                record: dict = {"dataset": data.name, "seed": seed}
                for key, params in (("vat", {}), ("supervised", {"method": "supervised"})):
                    params = {"max_iter": args.max_iter, **params}
                    cv = LabeledKFold(args.folds, random_state=seed)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        scores = cross_val_score(_vat(seed, params, data.scale), x_tr, y_semi, cv=cv)
                        model = _vat(seed, params, data.scale).fit(x_tr, y_semi)
                    record[f"cv_{key}"] = 100 * float(np.mean(scores))
                    record[f"test_{key}"] = 100 * float((model.predict(x_te) == y_te).mean())
                if args.eps_factors:
                    # the derived eps on all training rows; the grid is absolute values, as a user's would be
                    probe = _vat(seed, {"max_iter": 1}, data.scale)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        probe.fit(x_tr, y_semi)
                        eps = float(probe[-1].eps_)
                        step = probe.steps[-1][0]
                        search = GridSearchCV(
                            _vat(seed, {"max_iter": args.max_iter}, data.scale),
                            {f"{step}__eps": [f * eps for f in args.eps_factors]},
                            cv=LabeledKFold(args.folds, random_state=seed),
                        ).fit(x_tr, y_semi)
                    record["eps_factor"] = search.best_params_[f"{step}__eps"] / eps
                    record["test_vat_cv_eps"] = 100 * float((search.predict(x_te) == y_te).mean())
                record["seconds"] = time.perf_counter() - start
                rows.append(record)
                print(json.dumps(record), flush=True)
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        f.write(json.dumps(record) + "\n")
    print("\n| column | seed | CV: VAT | CV: supervised | test: VAT | test: supervised | verdicts agree |")
    print("|---|---|---|---|---|---|---|")
    agree = 0
    for r in rows:
        same = (r["cv_vat"] > r["cv_supervised"]) == (r["test_vat"] > r["test_supervised"])
        agree += same
        print(
            f"| {r['dataset']} | {r['seed']} | {r['cv_vat']:.1f} | {r['cv_supervised']:.1f} | "
            f"{r['test_vat']:.1f} | {r['test_supervised']:.1f} | {'yes' if same else 'no'} |"
        )
    print(f"\nverdicts agree on {agree} of {len(rows)}")
    if args.eps_factors:
        print("\n| column | seed | eps factor chosen by CV | test: VAT at it | test: VAT default | test: supervised |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['dataset']} | {r['seed']} | {r['eps_factor']:g} | {r['test_vat_cv_eps']:.1f} | "
                f"{r['test_vat']:.1f} | {r['test_supervised']:.1f} |"
            )


if __name__ == "__main__":
    main()
