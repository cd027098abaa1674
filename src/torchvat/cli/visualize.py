"""``torchvat visualize CHECKPOINT``: inputs, their perturbations and the predictions they flip.

For image data: a grid with, per example, the input with its predicted class and
probability, the perturbation (each scaled to its own range, which its column title gives: it is
far smaller than the image) and the perturbed input with the new
prediction: the panda/gibbon picture of Goodfellow et al. for your own model. The
perturbation is the L2 adversarial one (needs the labels), FGSM, or the virtual adversarial
one (no labels).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from torchvat.cli._common import add_common_options, l2_size, nonnegative_float, positive_int, threads
from torchvat.core import adversarial_perturbation, suggest_eps, virtual_adversarial_perturbation
from torchvat.report import plot_perturbation_grid
from torchvat.runs import UsageError, load_run

__all__ = ["PERTURBATIONS", "VisualizeResult", "add_parser", "run_visualize", "visualize_command"]

#: Perturbation kinds ``--attack`` accepts.
PERTURBATIONS = ("adversarial", "fgsm", "vat")


@dataclass
class VisualizeResult:
    """What :func:`run_visualize` produced.

    Args:
        path: The PNG written.
        eps: The perturbation size used.
        flipped: How many of the shown predictions the perturbation changed.
        n: How many examples are shown.
    """

    path: Path
    eps: float
    flipped: int
    n: int


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``visualize`` subcommand.

    Args:
        subparsers: The object ``ArgumentParser.add_subparsers`` returned.

    Returns:
        The subcommand's parser.
    """
    p = subparsers.add_parser(
        "visualize",
        help="input / perturbation / perturbed input grid for image models",
        description=(__doc__ or "").replace("``", ""),
    )
    add_common_options(p)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt file written by torchvat train, or its run folder")
    p.add_argument("--out", metavar="FILE", help="the PNG (default: CHECKPOINT's folder/perturbations.png)")
    p.add_argument("--attack", choices=PERTURBATIONS, default="adversarial", help="perturbation (default: adversarial)")
    p.add_argument("--eps", type=nonnegative_float, help="L2 size (default: 2x the training eps)")
    p.add_argument("--n", type=positive_int, default=6, help="examples shown (default: 6)")
    p.add_argument(
        "--start", type=int, default=0, help="index of the first held-out (test, else validation) example (default: 0)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the virtual adversarial search's start (default: 0)")
    p.add_argument("--device", default="cpu", help="device (default: cpu)")
    p.set_defaults(command=visualize_command)
    return p


def run_visualize(
    checkpoint: str | Path,
    out: str | Path | None = None,
    *,
    attack: str = "adversarial",
    eps: float | None = None,
    n: int = 6,
    start: int = 0,
    device: str = "cpu",
    quiet: bool = False,
    seed: int = 0,
) -> VisualizeResult:
    """Draw the perturbation grid of a trained image model.

    Args:
        checkpoint: A checkpoint written by ``torchvat train``, or its run folder.
        out: The PNG (default: ``perturbations.png`` beside the checkpoint).
        attack: One of :data:`PERTURBATIONS`.
        eps: L2 size of the perturbation (FGSM: L-inf size ``eps / sqrt(d)``); default twice
            the training eps.
        n: Number of examples.
        start: First held-out example shown (test set, else validation set, else labeled rows).
        device: Device.
        quiet: Print nothing.
        seed: Seed of the random start of the virtual adversarial search (two power iterations).

    Returns:
        The path and how many predictions flipped.

    Raises:
        UsageError: If the data are not images or an option is out of range.
    """
    if attack not in PERTURBATIONS:
        raise UsageError(f"--attack must be one of {', '.join(PERTURBATIONS)}, got {attack!r}")
    model, data, info = load_run(checkpoint, device=device)
    if len(data.input_shape) != 3 or data.input_shape[0] not in (1, 3):
        digits = (
            " (for 8x8 digits train with --data-option as_images=true)" if info.get("dataset_name") == "digits" else ""
        )
        raise UsageError(
            f"visualize needs image inputs [C, H, W] with 1 or 3 channels, got input shape {data.input_shape}; "
            f"for other inputs use torchvat evaluate{digits}"
        )
    split = "test" if data.x_test is not None else "val" if data.x_val is not None else "labeled"
    x_all, y_all = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
    if not 0 <= start < x_all.shape[0]:
        raise UsageError(f"--start must be in [0, {x_all.shape[0]}), got {start}")
    x = x_all[start : start + n].to(device)
    y = y_all[start : start + n].to(device)
    if eps is None:
        train_eps = info.get("eps")  # an L-inf training eps becomes the L2 length of its box corner
        base = l2_size(float(train_eps), info.get("norm", "l2"), data.input_shape) if train_eps else None
        eps = 2.0 * (base if base is not None else suggest_eps(data.train_inputs()))
    if attack == "adversarial":
        r = adversarial_perturbation(model, x, y, eps=eps, norm="l2")
    elif attack == "fgsm":
        r = adversarial_perturbation(model, x, y, eps=eps / math.sqrt(x[0].numel()), norm="linf")
    else:
        gen = torch.Generator().manual_seed(seed)
        r = virtual_adversarial_perturbation(model, x, eps=eps, n_power=2, generator=gen)
    with torch.no_grad():
        p0 = torch.softmax(model(x), 1)
        p1 = torch.softmax(model(x + r), 1)
    c0, c1 = p0.argmax(1), p1.argmax(1)
    path = Path(out) if out is not None else Path(info["checkpoint"]).parent / "perturbations.png"
    names = {"adversarial": "L2 adversarial", "fgsm": "FGSM (L-inf)", "vat": "virtual adversarial"}
    shown_x, shown_r, space = x, r, ""
    transform = info.get("transform")
    if transform is not None:  # whitened or standardized inputs: show the images as pixels
        with torch.no_grad():
            shown_x = transform.inverse_transform(x.cpu().double()).float()
            shown_r = transform.inverse_transform((x + r).cpu().double()).float() - shown_x
        space = f", shown as pixels (inverse {type(transform).__name__})"
    plot_perturbation_grid(
        shown_x,
        shown_r,
        path,
        pred_before=c0.tolist(),
        prob_before=p0.gather(1, c0[:, None])[:, 0].tolist(),
        pred_after=c1.tolist(),
        prob_after=p1.gather(1, c1[:, None])[:, 0].tolist(),
        labels=y.tolist(),
        class_names=data.classes,
        title=f"{info.get('method', '?')} on {info.get('dataset_name', '?')}: "
        f"{names[attack]} perturbation, eps = {eps:.3g} ({split} examples{space})",
    )
    flipped = int((c0 != c1).sum())
    if not quiet:
        print(f"{flipped} of {len(x)} predictions changed by the {names[attack]} perturbation (eps = {eps:.3g})")
        print(f"figure: {path}")
    return VisualizeResult(path=path, eps=eps, flipped=flipped, n=len(x))


def visualize_command(args: argparse.Namespace) -> int:
    """Run ``torchvat visualize`` from parsed arguments.

    Args:
        args: The parsed arguments.

    Returns:
        The exit code.
    """
    with threads(args.threads):
        run_visualize(
            args.checkpoint,
            args.out,
            attack=args.attack,
            eps=args.eps,
            n=args.n,
            start=args.start,
            device=args.device,
            seed=args.seed,
        )
    return 0
