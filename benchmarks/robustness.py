"""Robustness of each training method under one- and multi-step attacks, at one training budget per method.

For each data set and method, one model is trained with the same budget (iterations, batch sizes,
learning rate, seed) and the same training eps (L2, in the input's units: pixels in [0, 1]), then
evaluated on held-out examples:

- clean accuracy;
- FGSM accuracy: one signed-gradient step of L-inf size ``eps / sqrt(d)`` (the convention of
  ``torchvat evaluate``: its L2 norm is ``eps``);
- PGD-``k`` accuracy at the training eps, L-inf (``eps / sqrt(d)``) and L2 (``eps``): ``k`` steps of
  size ``2.5 eps / k`` from a random start, inputs clamped to [0, 1], a sample counted robust only
  if no restart fools it (:func:`torchvat.cli.evaluate.pgd_correct`);
- the wall time of the training run.

Gradient masking has a known signature: a one-step attack that does much worse than the multi-step
one at the same size. The ``masking?`` column flags a method whose FGSM accuracy is more than
``--masking-gap`` points above its PGD L-inf accuracy.

Data: ``digits`` (scikit-learn's 8x8 digits, every training label, the ``mlp`` network) and
``fashion-mnist`` (``--fashion-labels`` labels, the rest of the training images unlabeled, the
``mnist-mlp`` network; the IDX files offline, see :func:`torchvat.data.load_fashion_mnist`).

Usage::

    python benchmarks/robustness.py --threads 1
    python benchmarks/robustness.py --datasets digits --iters 200 --methods supervised,pgd-at
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from torchvat.cli.evaluate import pgd_correct
from torchvat.core import adversarial_perturbation
from torchvat.data import load_digits_data, load_fashion_mnist
from torchvat.models import build_model
from torchvat.train import Trainer, seed_everything

DATASETS = ("digits", "fashion-mnist")
METHODS = ("supervised", "at", "pgd-at", "trades", "vat", "at+vat")
#: the training eps (L2, pixels in [0, 1]) per data set
EPS = {"digits": 1.0, "fashion-mnist": 1.5}
CLAMP = (0.0, 1.0)


@dataclass
class Row:
    """One trained model's accuracies (in [0, 1]) and training time."""

    dataset: str
    method: str
    iterations: int
    eps: float
    n_eval: int
    clean: float
    fgsm: float
    pgd_linf: float
    pgd_l2: float
    train_s: float

    def masking(self, gap: float) -> bool:
        """Whether FGSM accuracy exceeds PGD L-inf accuracy by more than ``gap`` points."""
        return 100 * (self.fgsm - self.pgd_linf) > gap


def load(dataset: str, args: argparse.Namespace) -> tuple[Any, str]:
    """The data (a ``SemiSupervisedData`` with ``x_test``) and the network name."""
    if dataset == "digits":
        return load_digits_data(n_labels=None, seed=args.seed), "mlp"
    if dataset == "fashion-mnist":
        data = load_fashion_mnist(n_labels=args.fashion_labels, flatten=True, seed=args.seed)
        data.x_unlabeled = data.x_unlabeled[: args.fashion_unlabeled]
        return data, "mnist-mlp"
    raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")


def train(data: Any, network: str, method: str, eps: float, args: argparse.Namespace) -> tuple[torch.nn.Module, float]:
    """Train one model; return it (in eval mode) and the wall time of ``fit``."""
    seed_everything(args.seed)
    model = build_model(network, input_shape=tuple(data.x_labeled.shape[1:]), n_classes=10)
    extra: dict[str, Any] = {}
    if method in ("pgd-at", "trades"):
        extra = {"steps": args.train_steps, "clamp": list(CLAMP)}
    trainer = Trainer(
        model,
        data,
        method=method,
        eps=eps,
        norm="l2",
        iterations=args.iters,
        eval_every=args.iters,
        log_every=max(1, args.iters // 4),
        batch_size=32,
        unlabeled_batch_size=128,
        lr=1e-3,
        seed=args.seed,
        device="cpu",
        progress=False,
        extra=extra,
    )
    t0 = time.perf_counter()
    trainer.fit()
    return model.eval(), time.perf_counter() - t0


def evaluate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, args: argparse.Namespace
) -> dict[str, float]:
    """Clean, FGSM, PGD L-inf and PGD L2 accuracy at L2 size ``eps`` (L-inf ``eps / sqrt(d)``)."""
    eps_inf = eps / math.sqrt(x[0].numel())
    out = {"clean": 0.0, "fgsm": 0.0, "pgd_linf": 0.0, "pgd_l2": 0.0}
    for s in range(0, x.shape[0], 500):
        xb, yb = x[s : s + 500], y[s : s + 500]
        with torch.no_grad():
            out["clean"] += float((model(xb).argmax(1) == yb).sum())
        r = adversarial_perturbation(model, xb, yb, eps=eps_inf, norm="linf", clamp=CLAMP)
        with torch.no_grad():
            out["fgsm"] += float((model(xb + r).argmax(1) == yb).sum())
        for key, norm, size in (("pgd_linf", "linf", eps_inf), ("pgd_l2", "l2", eps)):
            ok = pgd_correct(
                model,
                xb,
                yb,
                eps=size,
                norm=norm,
                steps=args.pgd_steps,
                restarts=args.restarts,
                clamp=CLAMP,
                seed=args.seed,
            )
            out[key] += float(ok.sum())
    return {k: v / x.shape[0] for k, v in out.items()}


def format_table(rows: Sequence[Row], args: argparse.Namespace) -> str:
    """The markdown table (accuracies in %)."""
    k = args.pgd_steps
    lines = [
        f"| data | method | iters | eps L2 (L-inf) | clean % | FGSM % | PGD-{k} L-inf % | PGD-{k} L2 % "
        "| train s | masking? |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        d = 64 if r.dataset == "digits" else 784
        flag = "**yes**" if r.masking(args.masking_gap) else "no"
        lines.append(
            f"| {r.dataset} | {r.method} | {r.iterations} | {r.eps:g} ({r.eps / math.sqrt(d):.3g}) "
            f"| {100 * r.clean:.1f} | {100 * r.fgsm:.1f} | {100 * r.pgd_linf:.1f} | {100 * r.pgd_l2:.1f} "
            f"| {r.train_s:.0f} | {flag} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The script's options."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: digits, fashion-mnist")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated method names")
    p.add_argument("--iters", type=int, default=1500, help="training iterations per method (default 1500)")
    p.add_argument("--train-steps", type=int, default=10, help="PGD steps of pgd-at and trades in training (10)")
    p.add_argument("--pgd-steps", type=int, default=20, help="PGD steps of the evaluation (20)")
    p.add_argument("--restarts", type=int, default=1, help="random restarts of the evaluation's PGD (1)")
    p.add_argument("--n-eval", type=int, default=1000, help="held-out examples evaluated (default 1000)")
    p.add_argument("--fashion-labels", type=int, default=1000, help="Fashion-MNIST labels (1000)")
    p.add_argument("--fashion-unlabeled", type=int, default=10000, help="Fashion-MNIST unlabeled images (10000)")
    p.add_argument("--masking-gap", type=float, default=10.0, help="flag FGSM - PGD above this many points (10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train and evaluate every (data set, method); print the table and return the rows."""
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    rows: list[Row] = []
    for dataset in args.datasets.split(","):
        data, network = load(dataset, args)
        x, y = data.x_test[: args.n_eval], data.y_test[: args.n_eval]
        eps = EPS[dataset]
        for method in args.methods.split(","):
            model, seconds = train(data, network, method, eps, args)
            acc = evaluate(model, x, y, eps, args)
            rows.append(Row(dataset, method, args.iters, eps, x.shape[0], train_s=seconds, **acc))
            print(format_table(rows[-1:], args).splitlines()[-1], flush=True)
    print(
        f"\ntorch {torch.__version__} | threads {torch.get_num_threads()} | train steps {args.train_steps} "
        f"| PGD-{args.pgd_steps}, {args.restarts} restart(s), inputs clamped to [0, 1] | seed {args.seed}\n"
    )
    table = format_table(rows, args)
    print(table)
    return {"rows": rows, "table": table}


if __name__ == "__main__":
    main()
