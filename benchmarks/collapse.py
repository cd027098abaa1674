"""Reproduce the seed article's silent collapse of VAT and isolate its mechanism.

Run as written in the seed article (xi = 10, eps = 1, separate labeled and unlabeled passes
through a BatchNorm network) on Fashion-MNIST with 100 labels and the MNIST MLP, and compare
with variants that change one thing at a time, and with torchvat's trainer.

    python benchmarks/collapse.py --iters 500 --threads 2
    python benchmarks/collapse.py --experiment digits --iters 800 --seeds 0 1 2

Prints a markdown table: labeled cross-entropy at the end, and test error in eval mode and in
train mode (batch statistics of the test batch) every ``--every`` iterations.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _seed_vat import SeedVATLoss, seed_vat_step

from torchvat import frozen_batchnorm_stats
from torchvat.data import load_digits_data, load_fashion_mnist
from torchvat.models import MLP
from torchvat.train import Trainer, VirtualAdversarialTraining


class FrozenStatsSeedVAT(SeedVATLoss):
    """The seed's loss with BatchNorm running statistics frozen during its passes."""

    def forward(self, model, x):
        with frozen_batchnorm_stats(model):
            return super().forward(model, x)


def test_errors(model, x, y) -> tuple[float, float]:
    """Test error in eval mode and in train mode (BN on test-batch statistics, no updates)."""
    was = model.training
    errors = []
    with torch.no_grad():
        for train_mode in (False, True):
            model.train(train_mode)
            with frozen_batchnorm_stats(model):
                wrong = sum(
                    int((model(xb).argmax(1) != yb).sum()) for xb, yb in zip(x.split(1000), y.split(1000), strict=True)
                )
            errors.append(wrong / len(y))
    model.train(was)
    return errors[0], errors[1]


def run_seed(variant: str, data, iters: int, every: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = MLP(784, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    vat = {
        "seed as written (xi=10, eps=1)": SeedVATLoss(xi=10.0, eps=1.0),
        "seed, xi=1e-6 (paper's probe)": SeedVATLoss(xi=1e-6, eps=1.0),
        "seed, BN stats frozen in VAT passes": FrozenStatsSeedVAT(xi=10.0, eps=1.0),
        "seed, supervised only (alpha=0)": SeedVATLoss(xi=10.0, eps=1.0),
    }[variant]
    alpha = 0.0 if "alpha=0" in variant else 1.0
    g = torch.Generator().manual_seed(seed)
    xl, yl, xu = data.x_labeled.flatten(1), data.y_labeled, data.x_unlabeled.flatten(1)
    curve, ce = [], float("nan")
    for it in range(1, iters + 1):
        il = torch.randint(0, len(xl), (32,), generator=g)
        iu = torch.randint(0, len(xu), (128,), generator=g)
        model.train()
        seed_vat_step(model, opt, xl[il], yl[il], xu[iu], vat=vat, alpha=alpha)
        if it % every == 0:
            with torch.no_grad():
                model.eval()
                ce = F.cross_entropy(model(xl), yl).item()
            curve.append(test_errors(model, data.x_test.flatten(1), data.y_test))
    return {"ce": ce, "curve": curve}


def run_torchvat(data, iters: int, every: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = MLP(784, 10)
    curve = []

    from torchvat.train import Callback

    class Probe(Callback):
        def on_step_end(self, trainer, **kwargs):
            if trainer.step % every == 0:
                curve.append(test_errors(trainer.model, data.x_test.flatten(1), data.y_test))

    trainer = Trainer(
        model,
        data,
        method="vat",
        eps=1.0,
        iterations=iters,
        eval_every=iters,
        progress=False,
        seed=seed,
        schedule="constant",
        callbacks=[Probe()],
    )
    trainer.fit()
    model.eval()
    with torch.no_grad():
        ce = F.cross_entropy(model(data.x_labeled), data.y_labeled).item()
    return {"ce": ce, "curve": curve}


class JointTargetVAT(VirtualAdversarialTraining):
    """The trainer's VAT before the fix: target from a joint labeled + unlabeled pass, search on unlabeled rows."""

    @property
    def joint_clean_pass(self) -> bool:
        return True


def digits_composition(iters: int, seeds: list[int], eps: float) -> None:
    """BN MLP on digits: where the VAT target comes from decides between collapse and a 3x error cut."""
    data = load_digits_data(n_labels=100, seed=0)
    variants = {
        "supervised": lambda: "supervised",
        "VAT, target from the joint labeled+unlabeled pass (before the fix)": lambda: JointTargetVAT(eps=eps),
        "VAT, target from the unlabeled rows' own pass (torchvat default)": lambda: "vat",
        "VAT on all rows of one joint pass (regularize='all')": lambda: VirtualAdversarialTraining(
            eps=eps, regularize="all"
        ),
    }
    print(f"digits, 100 labels, MLP 64-256-128-64-10 with BatchNorm, eps {eps}, {iters} iterations, seeds {seeds}")
    print("\n| variant | test error, eval mode (%) | test error, train mode (%) |\n|---|---|---|")
    for name, make in variants.items():
        ev, tr = [], []
        for seed in seeds:
            torch.manual_seed(seed)
            model = MLP(64, 10, hidden_sizes=(256, 128, 64))
            Trainer(
                model,
                data,
                method=make(),
                eps=eps,
                iterations=iters,
                eval_every=iters,
                progress=False,
                seed=seed,
                checkpoint_every=None,
            ).fit()
            e, t = test_errors(model, data.x_test, data.y_test)
            ev.append(100 * e)
            tr.append(100 * t)
        print(
            f"| {name} | {statistics.mean(ev):.1f} ± {statistics.pstdev(ev):.1f} | "
            f"{statistics.mean(tr):.1f} ± {statistics.pstdev(tr):.1f} |",
            flush=True,
        )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", choices=["seed", "digits"], default="seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--eps", type=float, default=0.5)
    p.add_argument("--iters", type=int, default=500)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--labels", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.experiment == "digits":
        digits_composition(args.iters, args.seeds, args.eps)
        return
    data = load_fashion_mnist(n_labels=args.labels, seed=args.seed, flatten=True)
    variants = [
        "seed as written (xi=10, eps=1)",
        "seed, xi=1e-6 (paper's probe)",
        "seed, BN stats frozen in VAT passes",
        "seed, supervised only (alpha=0)",
    ]
    rows = []
    for v in variants:
        t = time.perf_counter()
        rows.append((v, run_seed(v, data, args.iters, args.every, args.seed), time.perf_counter() - t))
    t = time.perf_counter()
    rows.append(
        (
            "torchvat trainer (vat, eps=1, xi auto)",
            run_torchvat(data, args.iters, args.every, args.seed),
            time.perf_counter() - t,
        )
    )
    steps = list(range(args.every, args.iters + 1, args.every))
    print(f"Fashion-MNIST, {args.labels} labels, MNIST MLP (BN), Adam 1e-3, batches 32/128, seed {args.seed}")
    print("test error eval mode / train mode at iteration " + ", ".join(map(str, steps)))
    print()
    print("| variant | labeled CE (end) | " + " | ".join(f"it {s}" for s in steps) + " | time (s) |")
    print("|---|---|" + "---|" * len(steps) + "---|")
    for name, res, secs in rows:
        cells = " | ".join(f"{e:.1%} / {t:.1%}" for e, t in res["curve"])
        print(f"| {name} | {res['ce']:.4f} | {cells} | {secs:.0f} |")


if __name__ == "__main__":
    main()
