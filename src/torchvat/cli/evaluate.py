"""``torchvat evaluate CHECKPOINT``: test accuracy and robustness curves of a trained model.

Accuracy on the test set (or the validation set when there is none) against the size
``eps`` of four perturbations, all measured in the L2 norm so they share one axis:

- ``random noise``: a random direction of L2 norm ``eps``;
- ``L2 adversarial``: ``eps`` times the normalized loss gradient (Goodfellow et al., L2);
- ``FGSM (L-inf)``: the sign of the gradient with L-inf size ``eps / sqrt(d)``, so its L2
  norm is ``eps`` too (``d`` input entries);
- ``virtual adversarial``: the VAT perturbation (no labels; Miyato et al.);
- ``PGD (L2)``: ``--pgd-steps`` steps of projected gradient descent in the L2 ball of radius
  ``eps`` (Madry et al.), step size ``2.5 eps / steps``, from ``--pgd-restarts`` random starts
  (a sample counts as robust only if no restart fools it; 0 restarts: one search from x);
- ``PGD (L-inf)``: the same in the L-inf ball of radius ``eps / sqrt(d)``, FGSM's convention.

A one-step attack that does much better than PGD is the signature of gradient masking. With
``--autoattack`` (the ``torchvat[attacks]`` extra: the Adversarial Robustness Toolbox), AutoAttack
(APGD-CE, APGD-DLR with 3 or more classes, DeepFool, Square) is run in the L-inf ball at the training
eps, once. The report states the threat model: norm, eps in the input's units (after any
preprocessing the run applies), steps, restarts and input bounds (``--clamp``).

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

from torchvat import params
from torchvat._extras import require
from torchvat.cli._common import add_common_options, l2_size, positive_int, threads
from torchvat.core import adversarial_perturbation, suggest_eps, virtual_adversarial_perturbation
from torchvat.report import Report, plot_robustness, text_table
from torchvat.runs import UsageError, load_run, output_folder

__all__ = [
    "ATTACKS",
    "AUTOATTACK",
    "EvaluateResult",
    "add_parser",
    "autoattack_accuracy",
    "evaluate_command",
    "pgd_correct",
    "robustness_curves",
    "run_evaluate",
    "threat_model",
]

#: The perturbation kinds of the robustness curves.
ATTACKS = ("random noise", "L2 adversarial", "FGSM (L-inf)", "virtual adversarial", "PGD (L2)", "PGD (L-inf)")
#: The column of the AutoAttack accuracy (``--autoattack``), at the training eps only.
AUTOATTACK = "AutoAttack (L-inf)"
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
    p.add_argument("--pgd-steps", type=positive_int, default=20, help="gradient steps of each PGD search (20)")
    p.add_argument(
        "--pgd-restarts", type=int, default=1, help="random starts of PGD, robust only if none fools it (1; 0: from x)"
    )
    p.add_argument(
        "--clamp", type=float, nargs=2, metavar=("LO", "HI"), help="bounds of the perturbed input for PGD (none)"
    )
    p.add_argument(
        "--autoattack",
        action="store_true",
        help="also run AutoAttack (L-inf, at the training eps) from the torchvat[attacks] extra",
    )
    p.add_argument(
        "--weights",
        choices=params.choices("weights"),
        help="the weights evaluated: ema (the moving average of a run trained with --ema) or raw "
        "(default: ema when the checkpoint has it, else raw)",
    )
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
    pgd_steps: int = 20,
    pgd_restarts: int = 1,
    clamp: tuple[float, float] | None = None,
) -> dict[str, list[float]]:
    """Accuracy under each perturbation kind of :data:`ATTACKS` at each size.

    Args:
        model: The classifier (used in eval mode).
        x: Inputs.
        y: Labels.
        eps: L2 sizes.
        batch_size: Rows per pass.
        n_power: Power iterations of the VAT perturbation.
        seed: Seed of the random directions (and of PGD's first random start).
        pgd_steps: Gradient steps of each PGD search.
        pgd_restarts: PGD's random starts (0: one search from ``x``); see :func:`pgd_correct`.
        clamp: ``(lo, hi)`` bounds of PGD's perturbed input, or ``None``.

    Returns:
        Accuracy per kind, one value per size.

    Example:
        >>> model = torch.nn.Linear(2, 2).eval()
        >>> x = torch.randn(20, 2); y = model(x).argmax(1).detach()
        >>> curves = robustness_curves(model, x, y, [0.0, 1.0])
        >>> [c[0] for c in curves.values()]
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
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
                if kind.startswith("PGD"):
                    norm = "l2" if kind == "PGD (L2)" else "linf"
                    size = e if norm == "l2" else e / math.sqrt(x[0].numel())
                    ok = pgd_correct(
                        model,
                        xb,
                        yb,
                        eps=size,
                        norm=norm,
                        steps=pgd_steps,
                        restarts=pgd_restarts,
                        clamp=clamp,
                        seed=seed,
                    )
                    correct += int(ok.sum())
                else:
                    correct += _correct(model, xb + _perturb(kind, model, xb, yb, e, n_power, gen), yb)
            accs.append(correct / x.shape[0])
        curves[kind] = accs
    model.train(was_training)
    return curves


def pgd_correct(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str,
    steps: int = 20,
    restarts: int = 1,
    clamp: tuple[float, float] | None = None,
    seed: int = 0,
) -> Tensor:
    """Which samples PGD does not fool: ``restarts`` random starts, robust only if none of them fools it.

    With ``restarts=0`` the search starts from ``x`` (and keeps its best iterate, the one-step
    perturbation among the candidates); each restart draws its start from a generator seeded with
    ``seed + i``. The model is called as it is (put it in eval mode first).

    Args:
        model: The classifier.
        x: Inputs.
        y: Labels.
        eps: Radius of the ball in ``norm``, in the input's units.
        norm: ``"l2"`` or ``"linf"``.
        steps: Gradient steps of each search.
        restarts: Random starts (0: one search from ``x``).
        clamp: ``(lo, hi)`` bounds of the perturbed input, or ``None``.
        seed: Seed of the first restart.

    Returns:
        A boolean tensor [B]: correct under every search.

    Example:
        >>> model = torch.nn.Linear(2, 2).eval()
        >>> x = torch.randn(8, 2); y = model(x).argmax(1).detach()
        >>> bool(pgd_correct(model, x, y, eps=0.0, norm="l2").all())
        True
    """
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    if eps == 0:
        return robust
    for i in range(max(restarts, 1)):
        gen = torch.Generator(device=x.device).manual_seed(seed + i)
        r = adversarial_perturbation(
            model,
            x,
            y,
            eps=eps,
            norm=norm,  # type: ignore[arg-type]  # a str from the command line; the core checks it
            steps=steps,
            random_start=restarts > 0,
            clamp=clamp,
            generator=gen,
        )
        with torch.no_grad():
            robust &= model(x + r).argmax(1) == y
    return robust


def autoattack_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    n_classes: int,
    clamp: tuple[float, float] | None = None,
    batch_size: int = 500,
    square_queries: int = 5000,
) -> float:
    """Accuracy under the Adversarial Robustness Toolbox's AutoAttack in the L-inf ball of radius ``eps``.

    The attacks are the Toolbox's standard list: APGD with the cross entropy and (with 3 or more
    classes, which its loss needs) the difference-of-logits-ratio loss, 100 iterations and 5 random
    starts each, DeepFool, and Square with ``square_queries`` queries and 5 restarts, run one
    after the other on the samples still classified correctly (AutoAttack's protocol): a sample
    counts as robust only if every attack fails. The Toolbox needs input bounds: ``clamp``, or
    the range of ``x`` when ``None``.

    Args:
        model: The classifier (used in eval mode, on the CPU or ``x``'s device).
        x: Inputs.
        y: Labels.
        eps: L-inf radius in the input's units.
        n_classes: Number of the model's outputs.
        clamp: Bounds of the perturbed input.
        batch_size: Rows per pass.
        square_queries: Queries of the Square attack.

    Returns:
        The fraction of samples no attack fools.

    Raises:
        MissingExtraError: If the ``torchvat[attacks]`` extra is not installed.
    """
    require("art", extra="attacks", feature="torchvat evaluate --autoattack")
    evasion = require("art.attacks.evasion", extra="attacks", feature="torchvat evaluate --autoattack")
    estimators = require("art.estimators.classification", extra="attacks", feature="torchvat evaluate --autoattack")
    import numpy as np

    bounds = clamp if clamp is not None else (float(x.min()), float(x.max()))
    classifier = estimators.PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=n_classes,
        clip_values=bounds,
        device_type="gpu" if x.device.type == "cuda" else "cpu",
    )
    step = eps / 4
    apgd = {
        "norm": np.inf,
        "eps": eps,
        "eps_step": step,
        "max_iter": 100,
        "nb_random_init": 5,
        "batch_size": batch_size,
    }
    attacks = [evasion.AutoProjectedGradientDescent(classifier, loss_type="cross_entropy", **apgd)]
    if n_classes >= 3:
        attacks.append(evasion.AutoProjectedGradientDescent(classifier, loss_type="difference_logits_ratio", **apgd))
    attacks.append(
        evasion.DeepFool(classifier, max_iter=100, epsilon=1e-3, nb_grads=min(10, n_classes), batch_size=batch_size)
    )
    attacks.append(evasion.SquareAttack(classifier, norm=np.inf, eps=eps, max_iter=square_queries, nb_restarts=5))
    # AutoAttack's protocol, run here attack by attack (the Toolbox's AutoAttack.generate imports
    # `multiprocess`, which the extra does not install): each attack on the samples still robust
    x_np = x.detach().cpu().numpy()
    y_np = y.detach().cpu().numpy()
    was_training = model.training
    model.eval()
    try:
        robust = classifier.predict(x_np, batch_size=batch_size).argmax(1) == y_np
        for attack in attacks:
            idx = np.flatnonzero(robust)
            if idx.size == 0:
                break
            x_adv = attack.generate(x=x_np[idx], y=y_np[idx])
            fooled = classifier.predict(x_adv, batch_size=batch_size).argmax(1) != y_np[idx]
            robust[idx[fooled]] = False
    finally:
        model.train(was_training)
    return float(robust.mean())


def threat_model(
    *,
    d: int,
    pgd_steps: int,
    pgd_restarts: int,
    clamp: tuple[float, float] | None,
    autoattack_eps: float | None = None,
) -> str:
    """The report's statement of the threat model of each attack.

    Example:
        >>> "PGD: 20 steps" in threat_model(d=4, pgd_steps=20, pgd_restarts=1, clamp=None)
        True
    """
    bounds = "no input bounds" if clamp is None else f"inputs clamped to [{clamp[0]:g}, {clamp[1]:g}]"
    start = f"{pgd_restarts} random start(s), a sample robust only if none fools it" if pgd_restarts else "start at x"
    text = (
        "Threat model: eps is in the units of the model's input (after any preprocessing of the run), "
        f"d = {d} entries. L2 adversarial and PGD (L2): the L2 ball of radius eps. FGSM and PGD (L-inf): the "
        f"L-inf ball of radius eps / sqrt(d), whose corners lie at L2 distance eps. PGD: {pgd_steps} steps of size "
        f"2.5 eps / {pgd_steps}, {start}, the iterate of highest loss kept, {bounds}. "
        "A one-step attack far above PGD signals gradient masking."
    )
    if autoattack_eps is not None:
        text += (
            f" AutoAttack (Adversarial Robustness Toolbox): L-inf ball of radius {autoattack_eps / math.sqrt(d):.4g} "
            f"(eps = {autoattack_eps:.4g} on the L2 axis), {bounds if clamp else 'bounds: the range of the inputs'}."
        )
    return text


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
    pgd_steps: int = 20,
    pgd_restarts: int = 1,
    clamp: tuple[float, float] | None = None,
    autoattack: bool = False,
    quiet: bool = False,
    weights: str | None = None,
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
        seed: Seed of the random directions and of PGD's random starts.
        pgd_steps: Gradient steps of each PGD search.
        pgd_restarts: PGD's random starts (0: one search from the input).
        clamp: ``(lo, hi)`` bounds of PGD's (and AutoAttack's) perturbed input, or ``None``.
        autoattack: Also run AutoAttack (L-inf, at the training eps; the ``torchvat[attacks]`` extra).
        quiet: Print nothing.
        weights: ``"ema"``, ``"raw"`` or ``None`` (the average when the checkpoint has one; see
            :func:`~torchvat.runs.load_run`).

    Returns:
        The accuracies and files written.

    Raises:
        UsageError: If the run has no held-out data, or ``out`` is a file, or ``weights="ema"``
            for a run trained without an average of the weights.
        MissingExtraError: With ``autoattack``, if the ``torchvat[attacks]`` extra is missing.
    """
    if autoattack:  # before any work: name the extra that is missing
        require("art", extra="attacks", feature="torchvat evaluate --autoattack")
    if out is not None and Path(out).exists() and not Path(out).is_dir():  # before the model is loaded
        raise UsageError(f"--out {out} exists and is not a directory; give a folder (new or existing)")
    model, data, info = load_run(checkpoint, device=device, weights=weights)
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
    curves = robustness_curves(
        model,
        x,
        y,
        eps,
        batch_size=batch_size,
        n_power=n_power,
        seed=seed,
        pgd_steps=pgd_steps,
        pgd_restarts=pgd_restarts,
        clamp=clamp,
    )
    d = int(x[0].numel())
    aa_eps = float(train_eps) if train_eps else float(eps[len(eps) // 2])
    aa_acc = None
    if autoattack:
        n_classes = int(model(x[:1]).shape[1])
        aa_acc = autoattack_accuracy(
            model.eval(), x, y, eps=aa_eps / math.sqrt(d), n_classes=n_classes, clamp=clamp, batch_size=batch_size
        )
    correct = sum(_correct(model, x[s : s + batch_size], y[s : s + batch_size]) for s in range(0, len(x), batch_size))
    accuracy = correct / len(x)
    out_dir = Path(out) if out is not None else Path(info["checkpoint"]).parent / "evaluate"
    with output_folder(out_dir):  # a new folder is removed again if writing fails
        headers = ["eps (L2)", *ATTACKS] + ([AUTOATTACK] if aa_acc is not None else [])
        rows: list[list[float | str]] = [
            [e, *(round(100 * curves[k][i], 2) for k in ATTACKS)] for i, e in enumerate(eps)
        ]
        if aa_acc is not None:
            for row, e in zip(rows, eps, strict=True):
                row.append(round(100 * aa_acc, 2) if math.isclose(e, aa_eps) else "")
        with (out_dir / "robustness.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["eps", *headers[1:]])
            for i, e in enumerate(eps):
                extra = [] if aa_acc is None else [aa_acc if math.isclose(e, aa_eps) else ""]
                writer.writerow([e, *(curves[k][i] for k in ATTACKS), *extra])
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
            f"Checkpoint `{info['checkpoint']}` (step {info['step']}, {info['weights']} weights), "
            f"model `{info['model']['name']}`. "
            f"Clean {split} accuracy: **{100 * accuracy:.2f}%** on {len(x)} examples. Accuracies below in %."
        )
        threat = threat_model(
            d=d,
            pgd_steps=pgd_steps,
            pgd_restarts=pgd_restarts,
            clamp=clamp,
            autoattack_eps=aa_eps if autoattack else None,
        )
        report.text(threat)
        report.table(headers, rows)
        report.figure("robustness.png", "Accuracy against the L2 size of each perturbation")
        paths = {"plot": plot, "csv": out_dir / "robustness.csv", "report": report.write(out_dir)}
    table = text_table(headers, rows)
    if not quiet:
        where = f"{len(x)} examples, step {info['step']}, {info['weights']} weights"
        print(f"{name}: {split} accuracy {100 * accuracy:.2f}% ({where})")
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
    if args.pgd_restarts < 0:
        raise UsageError(f"--pgd-restarts must be >= 0, got {args.pgd_restarts}")
    clamp = tuple(args.clamp) if args.clamp is not None else None
    if clamp is not None and not (math.isfinite(clamp[0]) and math.isfinite(clamp[1]) and clamp[0] < clamp[1]):
        raise UsageError(f"--clamp must be two finite numbers LO < HI, got {args.clamp}")
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
            pgd_steps=args.pgd_steps,
            pgd_restarts=args.pgd_restarts,
            clamp=clamp,
            autoattack=args.autoattack,
            weights=args.weights,
        )
    return 0
