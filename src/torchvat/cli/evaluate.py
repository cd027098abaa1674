"""``torchvat evaluate CHECKPOINT``: test accuracy and robustness curves of a trained model.

Accuracy on the test set (or the validation set when there is none) against the size
``eps`` of four perturbations, all measured in the L2 norm so they share one axis:

- ``random noise``: a random direction of L2 norm ``eps``;
- ``L2 adversarial``: ``eps`` times the normalized loss gradient (Goodfellow et al., L2);
- ``FGSM (L-inf)``: the sign of the gradient with L-inf size ``eps / sqrt(d)``, so its L2
  norm is ``eps`` too (``d`` input entries);
- ``virtual adversarial``: the VAT perturbation (no labels; Miyato et al.).

The eps grid defaults to multiples of the training eps (or of :func:`torchvat.suggest_eps`).
Needs the ``run.json`` that ``torchvat train`` writes beside the checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from torchvat.cli._common import add_common_options, l2_size, positive_int, threads
from torchvat.core import adversarial_perturbation, suggest_eps, virtual_adversarial_perturbation
from torchvat.report import Report, plot_robustness, text_table
from torchvat.runs import UsageError, load_run, output_folder

__all__ = ["ATTACKS", "EvaluateResult", "add_parser", "evaluate_command", "robustness_curves", "run_evaluate"]

#: The perturbation kinds of the robustness curves.
ATTACKS = ("random noise", "L2 adversarial", "FGSM (L-inf)", "virtual adversarial")
_GRID = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)


@dataclass
class EvaluateResult:
    """What :func:`run_evaluate` produced.

    Args:
        accuracy: Clean accuracy on the evaluated split.
        split: ``"test"`` or ``"val"``.
        eps: The perturbation sizes.
        curves: Accuracy per perturbation kind, one per ``eps``.
        table: The printed table.
        paths: Files written, by name.
    """

    accuracy: float
    split: str
    eps: list[float]
    curves: dict[str, list[float]]
    table: str
    paths: dict[str, Path] = field(default_factory=dict)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand.

    Args:
        subparsers: The object ``ArgumentParser.add_subparsers`` returned.

    Returns:
        The subcommand's parser.
    """
    p = subparsers.add_parser(
        "evaluate",
        help="test accuracy and robustness curves of a checkpoint",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_options(p)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt file written by torchvat train, or its run folder")
    p.add_argument("--out", metavar="DIR", help="where to write (default: CHECKPOINT's folder/evaluate)")
    p.add_argument("--eps", metavar="LIST", help="comma-separated L2 sizes (default: multiples of the training eps)")
    p.add_argument("--max-examples", type=positive_int, default=2000, help="evaluate on at most this many (2000)")
    p.add_argument("--batch-size", type=positive_int, default=500, help="rows per pass (default: 500)")
    p.add_argument("--n-power", type=int, default=1, help="power iterations of the VAT perturbation (default: 1)")
    p.add_argument("--device", default="cpu", help="device (default: cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random directions (default: 0)")
    p.set_defaults(command=evaluate_command)
    return p


def _perturb(
    kind: str, model: nn.Module, x: Tensor, y: Tensor, eps: float, n_power: int, gen: torch.Generator
) -> Tensor:
    if eps == 0:
        return torch.zeros_like(x)
    if kind == "random noise":
        d = torch.randn(x.shape, generator=gen, device="cpu").to(x.device, x.dtype)
        return eps * d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
    if kind == "L2 adversarial":
        return adversarial_perturbation(model, x, y, eps=eps, norm="l2")
    if kind == "FGSM (L-inf)":
        return adversarial_perturbation(model, x, y, eps=eps / math.sqrt(x[0].numel()), norm="linf")
    return virtual_adversarial_perturbation(model, x, eps=eps, n_power=n_power, generator=gen)


@torch.no_grad()
def _correct(model: nn.Module, x: Tensor, y: Tensor) -> int:
    return int((model(x).argmax(1) == y).sum())


def robustness_curves(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: list[float],
    *,
    batch_size: int = 500,
    n_power: int = 1,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Accuracy under each perturbation kind of :data:`ATTACKS` at each size.

    Args:
        model: The classifier (used in eval mode).
        x: Inputs.
        y: Labels.
        eps: L2 sizes.
        batch_size: Rows per pass.
        n_power: Power iterations of the VAT perturbation.
        seed: Seed of the random directions.

    Returns:
        Accuracy per kind, one value per size.

    Example:
        >>> model = torch.nn.Linear(2, 2).eval()
        >>> x = torch.randn(20, 2); y = model(x).argmax(1).detach()
        >>> curves = robustness_curves(model, x, y, [0.0, 1.0])
        >>> [c[0] for c in curves.values()]
        [1.0, 1.0, 1.0, 1.0]
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator()
    curves: dict[str, list[float]] = {}
    for kind in ATTACKS:
        accs = []
        for e in eps:
            gen.manual_seed(seed)  # the same random directions at every size: a curve that does not depend on the grid
            correct = 0
            for s in range(0, x.shape[0], batch_size):
                xb, yb = x[s : s + batch_size], y[s : s + batch_size]
                correct += _correct(model, xb + _perturb(kind, model, xb, yb, e, n_power, gen), yb)
            accs.append(correct / x.shape[0])
        curves[kind] = accs
    model.train(was_training)
    return curves


def _parse_eps(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--eps must be comma-separated numbers, got {text!r}") from None
    if not values or any(not math.isfinite(v) or v < 0 for v in values):
        raise UsageError(f"--eps must list finite numbers >= 0, got {text!r}")
    return sorted(set(values))


def run_evaluate(
    checkpoint: str | Path,
    out: str | Path | None = None,
    *,
    eps: list[float] | None = None,
    max_examples: int = 2000,
    batch_size: int = 500,
    n_power: int = 1,
    device: str = "cpu",
    seed: int = 0,
    quiet: bool = False,
) -> EvaluateResult:
    """Evaluate a checkpoint: clean accuracy and robustness curves, as a table and a plot.

    Args:
        checkpoint: A checkpoint written by ``torchvat train``, or its run folder.
        out: Where to write ``robustness.png``, ``robustness.csv`` and ``report.md``
            (default: ``evaluate/`` beside the checkpoint).
        eps: L2 sizes (default: multiples of the training eps).
        max_examples: Evaluate on at most this many held-out examples (the first ones).
        batch_size: Rows per pass.
        n_power: Power iterations of the VAT perturbation.
        device: Device.
        seed: Seed of the random directions.
        quiet: Print nothing.

    Returns:
        The accuracies and files written.

    Raises:
        UsageError: If the run has no held-out data, or ``out`` is a file.
    """
    if out is not None and Path(out).exists() and not Path(out).is_dir():  # before the model is loaded
        raise UsageError(f"--out {out} exists and is not a directory; give a folder (new or existing)")
    model, data, info = load_run(checkpoint, device=device)
    split = "test" if data.x_test is not None else "val" if data.x_val is not None else None
    if split is None:
        raise UsageError(f"the run of {checkpoint} has no test or validation data to evaluate on")
    x = getattr(data, f"x_{split}")[:max_examples].to(device)
    y = getattr(data, f"y_{split}")[:max_examples].to(device)
    train_eps = info.get("eps")
    if train_eps:  # on the L2 axis: a run trained with norm="linf" moved each input by eps * sqrt(d)
        train_eps = l2_size(float(train_eps), info.get("norm", "l2"), data.input_shape)
    if eps is None:
        base = float(train_eps) if train_eps else suggest_eps(data.train_inputs())
        eps = [round(base * g, 6) for g in _GRID]
    curves = robustness_curves(model, x, y, eps, batch_size=batch_size, n_power=n_power, seed=seed)
    correct = sum(_correct(model, x[s : s + batch_size], y[s : s + batch_size]) for s in range(0, len(x), batch_size))
    accuracy = correct / len(x)
    out_dir = Path(out) if out is not None else Path(info["checkpoint"]).parent / "evaluate"
    with output_folder(out_dir):  # a new folder is removed again if writing fails
        headers = ["eps (L2)", *ATTACKS]
        rows = [[e, *(round(100 * curves[k][i], 2) for k in ATTACKS)] for i, e in enumerate(eps)]
        with (out_dir / "robustness.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["eps", *ATTACKS])
            for i, e in enumerate(eps):
                writer.writerow([e, *(curves[k][i] for k in ATTACKS)])
        name = f"{info.get('method', '?')} on {info.get('dataset_name', '?')}"
        plot = plot_robustness(
            eps,
            curves,
            out_dir / "robustness.png",
            title=f"{name}: {split} accuracy under perturbation (n = {len(x)})",
            train_eps=float(train_eps) if train_eps else None,
        )
        report = Report(f"torchvat evaluate: {name}")
        report.text(
            f"Checkpoint `{info['checkpoint']}` (step {info['step']}), model `{info['model']['name']}`. "
            f"Clean {split} accuracy: **{100 * accuracy:.2f}%** on {len(x)} examples. Accuracies below in %."
        )
        report.table(headers, rows)
        report.figure("robustness.png", "Accuracy against the L2 size of each perturbation")
        paths = {"plot": plot, "csv": out_dir / "robustness.csv", "report": report.write(out_dir)}
    table = text_table(headers, rows)
    if not quiet:
        print(f"{name}: {split} accuracy {100 * accuracy:.2f}% ({len(x)} examples, step {info['step']})")
        print(table)
        print(f"report: {paths['report']}")
    return EvaluateResult(accuracy=accuracy, split=split, eps=list(eps), curves=curves, table=table, paths=paths)


def evaluate_command(args: argparse.Namespace) -> int:
    """Run ``torchvat evaluate`` from parsed arguments.

    Args:
        args: The parsed arguments.

    Returns:
        The exit code.
    """
    eps = _parse_eps(args.eps) if args.eps is not None else None
    if args.n_power < 1:
        raise UsageError(f"--n-power must be >= 1, got {args.n_power}")
    with threads(args.threads):
        run_evaluate(
            args.checkpoint,
            args.out,
            eps=eps,
            max_examples=args.max_examples,
            batch_size=args.batch_size,
            n_power=args.n_power,
            device=args.device,
            seed=args.seed,
        )
    return 0
