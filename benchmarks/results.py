"""Semi-supervised results with torchvat's trainer: methods side by side, and the eps sweep.

    python benchmarks/results.py methods --dataset digits --labels 100 --iters 3000 --seeds 0 1 2
    python benchmarks/results.py eps-sweep --dataset digits --labels 100 --iters 3000 --seeds 0 1 2

``methods`` trains every method on the same network, labels and iteration budget and prints
mean +- std of the final test error. ``eps-sweep`` trains VAT with eps = s * (median
distance of the training inputs to their mean) for several s, then the trainer's data-derived
default (``eps=None``: ``suggest_eps(rule="labeled")``, reported as the s it amounts to) and
its gap to the best row (``--scales`` with no value: the default only).
Rows are printed as they finish (flushed), the tables at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from torchvat import suggest_eps
from torchvat.data import load_dataset
from torchvat.models import MLP, default_model
from torchvat.train import Trainer


def build(dataset: str, labels: int, seed: int, model_name: str | None):
    kwargs = {"n_labels": labels, "seed": seed}
    if dataset == "fashion-mnist":
        kwargs["flatten"] = True
    data = load_dataset(dataset, **kwargs)
    torch.manual_seed(seed)
    if model_name == "mnist-mlp":
        model = MLP(int(torch.tensor(data.input_shape).prod()), data.n_classes)
    else:
        model = default_model(data.input_shape, data.n_classes)
    return data, model


def run(dataset, labels, seed, method, iters, eps, model_name, **extra) -> tuple[float, float, float]:
    data, model = build(dataset, labels, seed, model_name)
    t = time.perf_counter()
    result = Trainer(
        model,
        data,
        method=method,
        eps=eps,
        iterations=iters,
        eval_every=max(iters // 4, 1),
        progress=False,
        seed=seed,
        checkpoint_every=None,
        **extra,
    ).fit()
    return result.final["test_error"], result.eps if result.eps is not None else float("nan"), time.perf_counter() - t


def fmt(errors: list[float]) -> str:
    m = statistics.mean(errors)
    s = statistics.stdev(errors) if len(errors) > 1 else 0.0
    return f"{100 * m:.2f} ± {100 * s:.2f}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=["methods", "eps-sweep"])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--labels", type=int, default=100)
    p.add_argument("--iters", type=int, default=3000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["supervised", "rpt", "at", "vat", "vat+ent"])
    p.add_argument("--scales", type=float, nargs="*", default=[0.125, 0.25, 0.5, 1.0], help="none: the default only")
    p.add_argument("--no-default", action="store_true", help="eps-sweep: skip the default row")
    p.add_argument("--model", default=None, help="'mnist-mlp' for the paper's MLP; default: torchvat's default model")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = args.model or "default"
    title = f"{args.dataset}, {args.labels} labels, {args.iters} iterations, seeds {args.seeds}, model {model}"
    rows: list[tuple[str, list[float], float]] = []
    if args.task == "methods":
        for method in args.methods:
            errs, secs, eps = [], 0.0, float("nan")
            for seed in args.seeds:
                err, eps, dt = run(args.dataset, args.labels, seed, method, args.iters, None, args.model)
                errs.append(err)
                secs += dt
                print(f"{method} seed {seed}: test error {100 * err:.2f}% eps {eps:.3f} ({dt:.0f} s)", flush=True)
            rows.append(
                (f"{method} (eps {eps:.3g})" if method != "supervised" else method, errs, secs / len(args.seeds))
            )
        print(f"\n{title}\n\n| method | test error (%) | time per run (s) |\n|---|---|---|")
        for name, errs, secs in rows:
            print(f"| {name} | {fmt(errs)} | {secs:.0f} |")
    else:
        # explicit eps = s * radius of each seed's own training inputs, and the trainer's default
        # (eps=None: suggest_eps(rule="labeled")), reported as its own s
        radius = {}
        for seed in args.seeds:
            data, _ = build(args.dataset, args.labels, seed, args.model)
            radius[seed] = suggest_eps(data.x_unlabeled.flatten(1), scale=1.0)
        for s in [*args.scales] + ([] if args.no_default else [None]):
            errs, implied = [], []
            for seed in args.seeds:
                eps = None if s is None else s * radius[seed]
                err, used, dt = run(args.dataset, args.labels, seed, "vat", args.iters, eps, args.model)
                errs.append(err)
                implied.append(used / radius[seed])
                name = "default" if s is None else f"s = {s:g}"
                print(f"{name} seed {seed}: test error {100 * err:.2f}% (eps {used:.3f}, {dt:.0f} s)", flush=True)
            implied_txt = "/".join(f"{v:.3f}" for v in implied)
            label = f"s = {s:g}" if s is not None else f"default, eps=None (s = {implied_txt})"
            rows.append((label, errs, 0.0))
        radius_txt = ", ".join(f"{r:.3f}" for r in radius.values())
        best = min(statistics.mean(e) for _, e, _ in rows)
        default = statistics.mean(rows[-1][1]) if not args.no_default else float("nan")
        print(f"\n{title}; data radius (median distance to the mean) per seed: {radius_txt}")
        print("\n| eps = s * radius | VAT test error (%) |\n|---|---|")
        for name, errs, _ in rows:
            print(f"| {name} | {fmt(errs)} |")
        print(f"\ndefault / best of the rows above = {default / best:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
