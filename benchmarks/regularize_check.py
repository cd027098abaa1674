"""Separate clean passes against one joint pass (``regularize``) on Fashion-MNIST with the MNIST MLP.

The held-out check of the engine's ``regularize`` default (BENCHMARKS.md §6): the MNIST MLP with
BatchNorm, 100 labels, the derived eps and the ``mnist-100`` recipe's batches and schedule; prints
the test error at each quarter of the run, then how many test images the final network assigns
to each class (1,000 a class in the test set: a collapse that merges classes shows here).
``--norm layer`` checks the same widths with LayerNorm in place of BatchNorm, ``--norm trimmed``
with :class:`torchvat.models.TrimmedBatchNorm1d` (``bn_trim=5``, the generic ``"mlp"``'s), ``--method
supervised`` gives the baseline, ``--eps`` replaces the derived eps, ``--labeled-stats unlabeled``
normalizes the labeled rows with the unlabeled batch's statistics (``TrainConfig.labeled_stats``),
``--bn-recalibrate unlabeled`` evaluates with BatchNorm statistics re-estimated over the unlabeled
pool (the printed class counts use the trained statistics).

    python benchmarks/regularize_check.py --regularize all --iterations 4000
    python benchmarks/regularize_check.py --norm layer --iterations 4000
    python benchmarks/regularize_check.py --norm trimmed --iterations 4000
    python benchmarks/regularize_check.py --labeled-stats unlabeled --iterations 4000
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from torchvat.data import load_fashion_mnist
from torchvat.models import build_model
from torchvat.models.norm import DEFAULT_TRIM
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
    parser.add_argument("--norm", default="batch", choices=("batch", "layer", "trimmed"))
    parser.add_argument("--method", default="vat", choices=("vat", "supervised"))
    parser.add_argument("--eps", type=float, default=None, help="default: derived from the data")
    parser.add_argument("--labeled-stats", default="own", choices=("own", "unlabeled"))
    parser.add_argument(
        "--bn-recalibrate",
        default=None,
        choices=("labeled", "unlabeled"),
        help="evaluate with BatchNorm statistics re-estimated on that split (100 batches of 128)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe("mnist-100")
    train = {k: recipe.train[k] for k in _KEYS if k in recipe.train}
    data = load_fashion_mnist(n_labels=args.labels, flatten=True, seed=args.seed)
    seed_everything(args.seed)
    trim = DEFAULT_TRIM if args.norm == "trimmed" else None
    model = build_model("mnist-mlp", input_shape=tuple(data.x_labeled.shape[1:]), n_classes=10, bn_trim=trim)
    if args.norm == "layer":  # the same widths, LayerNorm where the MNIST MLP has BatchNorm
        assert isinstance(model.features, nn.Sequential)
        for i, layer in enumerate(model.features):
            if isinstance(layer, nn.BatchNorm1d):
                model.features[i] = nn.LayerNorm(layer.num_features)
    trainer = Trainer(
        model,
        data,
        seed=args.seed,
        progress=False,
        method=args.method,
        eps=args.eps,
        regularize=args.regularize,
        labeled_stats=args.labeled_stats,
        bn_recalibrate=args.bn_recalibrate,
        bn_recalibrate_batches=100,
        bn_recalibrate_batch_size=128,
        iterations=args.iterations,
        eval_every=max(args.iterations // 4, 1),
        collapse_patience=0,
        **train,
    )
    result = trainer.fit()
    errors = [(h["step"], 100 * h["test_error"]) for h in result.history if "test_error" in h]
    model.eval()
    with torch.no_grad():
        counts = torch.bincount(model(data.x_test).argmax(1), minlength=10).tolist()
    eps = "-" if result.eps is None else f"{result.eps:.3g}"
    print(
        f"| {args.norm} | {args.method} | {trainer.config.regularize} | {args.labeled_stats} | eps {eps} | "
        + " | ".join(f"{e:.1f}" for _, e in errors)
        + f" | test predictions per class {counts} |"
    )


if __name__ == "__main__":
    main()
