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

import copy

import torch
import torch.nn.functional as F
from _timing import cost_args, interleaved_medians
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
    args = cost_args(__doc__.splitlines()[0])
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
            ms = interleaved_medians(steps, args.steps, args.repeats)
            p, t = ms["plain"], ms["trimmed"]
            print(f"| {d} | {kind} | {p:.2f} | {t:.2f} | {t / p:.2f} |", flush=True)


if __name__ == "__main__":
    main()
