"""Cost of the generic MLP's trimmed BatchNorm against plain BatchNorm, per training step.

The generic ``"mlp"`` (:func:`torchvat.models.build_model`) with ``bn_trim=5`` normalizes with
:class:`torchvat.models.TrimmedBatchNorm1d`; by default (``bn_trim=None``) with ``BatchNorm1d``. Both networks
start from the same weights and see the same batches; a step is a supervised step (cross entropy on
the labeled batch) or a VAT step (the same, plus :func:`torchvat.vat_loss` on the unlabeled batch
with one power iteration), then a backward and an Adam step. The step types and the two networks
are timed in interleaved repetitions in one process, so load changes hit all of them alike.

    python benchmarks/trimmed_bn_cost.py --features 64 784 --steps 100 --repeats 5

Prints the median time per step (ms) of each network and the ratio trimmed / plain.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from torchvat import vat_loss
from torchvat.models import build_model


def make_step(model: nn.Module, kind: str, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor):
    """One training step of ``kind`` (``"supervised"`` or ``"vat"``) on fixed batches."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x_l), y_l)
        if kind == "vat":
            loss = loss + vat_loss(model, x_u, eps=1.0, generator=gen)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, nargs="+", default=[64, 784])
    parser.add_argument("--steps", type=int, default=100, help="steps a timed repetition")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--labeled", type=int, default=32)
    parser.add_argument("--unlabeled", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batches {args.labeled} + {args.unlabeled}")
    print("| features | step | BatchNorm1d (ms) | TrimmedBatchNorm1d (ms) | trimmed / plain |")
    print("|---|---|---|---|---|")
    for d in args.features:
        g = torch.Generator().manual_seed(d)
        x_l, x_u = torch.randn(args.labeled, d, generator=g), torch.randn(args.unlabeled, d, generator=g)
        y_l = torch.randint(0, 10, (args.labeled,), generator=g)
        torch.manual_seed(0)
        trimmed = build_model("mlp", input_shape=(d,), n_classes=10, bn_trim=5.0).train()
        plain = build_model("mlp", input_shape=(d,), n_classes=10).train()
        plain.load_state_dict(copy.deepcopy(trimmed.state_dict()))
        for kind in ("supervised", "vat"):
            steps = {name: make_step(m, kind, x_l, y_l, x_u) for name, m in (("plain", plain), ("trimmed", trimmed))}
            times: dict[str, list[float]] = {name: [] for name in steps}
            for name in steps:
                for _ in range(5):
                    steps[name]()  # warm-up
            for r in range(args.repeats):
                order = list(steps) if r % 2 == 0 else list(reversed(steps))
                for name in order:
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        steps[name]()
                    times[name].append((time.perf_counter() - start) / args.steps * 1e3)
            p, t = statistics.median(times["plain"]), statistics.median(times["trimmed"])
            print(f"| {d} | {kind} | {p:.2f} | {t:.2f} | {t / p:.2f} |", flush=True)


if __name__ == "__main__":
    main()
