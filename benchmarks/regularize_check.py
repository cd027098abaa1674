"""Separate clean passes against one joint pass (``regularize``) on Fashion-MNIST with the MNIST MLP.

The held-out check of the engine's ``regularize`` default (BENCHMARKS.md §6): the MNIST MLP with
BatchNorm, 100 labels, the derived eps and the ``mnist-100`` recipe's batches and schedule; prints
the test error at each quarter of the run.

    python benchmarks/regularize_check.py --regularize all --iterations 4000
"""

from __future__ import annotations

import argparse

import torch

from torchvat.data import load_fashion_mnist
from torchvat.models import build_model
from torchvat.recipes import load_recipe
from torchvat.train import Trainer, seed_everything

_KEYS = ("batch_size", "unlabeled_batch_size", "lr", "schedule", "optimizer", "decay_fraction", "beta1", "decay_beta1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regularize", default="unlabeled", choices=("unlabeled", "all", "auto"))
    parser.add_argument("--iterations", type=int, default=4000)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe("mnist-100")
    train = {k: recipe.train[k] for k in _KEYS if k in recipe.train}
    data = load_fashion_mnist(n_labels=args.labels, flatten=True, seed=args.seed)
    seed_everything(args.seed)
    model = build_model("mnist-mlp", input_shape=tuple(data.x_labeled.shape[1:]), n_classes=10)
    trainer = Trainer(
        model,
        data,
        seed=args.seed,
        progress=False,
        method="vat",
        regularize=args.regularize,
        iterations=args.iterations,
        eval_every=max(args.iterations // 4, 1),
        collapse_patience=0,
        **train,
    )
    result = trainer.fit()
    errors = [(h["step"], 100 * h["test_error"]) for h in result.history if "test_error" in h]
    print(f"| {trainer.config.regularize} | eps {result.eps:.3g} | " + " | ".join(f"{e:.1f}" for _, e in errors) + " |")


if __name__ == "__main__":
    main()
