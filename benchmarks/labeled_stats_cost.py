"""Cost of ``labeled_stats="unlabeled"`` against ``"own"``, per VAT training step of the engine.

A step is the trainer's forward half (:func:`torchvat.train.step.compute_method_loss`: the clean
passes, the VAT search and the perturbed pass) on fixed batches, then a backward and an Adam step,
on the generic ``"mlp"`` (:func:`torchvat.models.build_model`, BatchNorm). With ``"unlabeled"``
the unlabeled clean pass keeps its graph, because the labeled rows are normalized with its
statistics and the cross entropy's gradient flows through them; that backward is the extra cost.
Both networks start from the same weights; the two layouts are timed in interleaved repetitions
in one process, so load changes hit both alike.

    python benchmarks/labeled_stats_cost.py --features 64 784 --steps 100 --repeats 5

Prints the median time per step (ms) of each layout and the ratio unlabeled / own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from _timing import cost_args, interleaved_medians
from torch import nn

from torchvat.models import build_model
from torchvat.train import Batch, get_method
from torchvat.train.step import compute_method_loss

LAYOUTS = ("own", "unlabeled")


def make_step(model: nn.Module, labeled_stats: str, batch: Batch) -> Callable[[], None]:
    """One VAT training step of the engine with ``labeled_stats`` on the fixed ``batch``."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    method = get_method("vat", eps=1.0)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss, _, _ = compute_method_loss(
            model, method, batch, method.weights, generator=gen, labeled_stats=labeled_stats
        )
        loss.backward()
        opt.step()

    return step


def main() -> None:
    args = cost_args(__doc__.splitlines()[0])
    print("| features | own (ms) | unlabeled (ms) | unlabeled / own |")
    print("|---|---|---|---|")
    for d in args.features:
        g = torch.Generator().manual_seed(d)
        batch = Batch(
            torch.randn(args.labeled, d, generator=g),
            torch.randint(0, 10, (args.labeled,), generator=g),
            torch.randn(args.unlabeled, d, generator=g),
        )
        torch.manual_seed(0)
        first = build_model("mlp", input_shape=(d,), n_classes=10).train()
        steps = {name: make_step(copy.deepcopy(first), name, batch) for name in LAYOUTS}
        ms = interleaved_medians(steps, args.steps, args.repeats)
        print(f"| {d} | {ms['own']:.2f} | {ms['unlabeled']:.2f} | {ms['unlabeled'] / ms['own']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
