"""Report figures: decision boundaries, learning curves, comparisons, robustness, perturbations.

Every function draws on the headless Agg backend, writes one PNG of a fixed pixel size
(``figsize * dpi``; no tight cropping, so the size is predictable) and returns its path.
Titles wider than the figure (or the axes) are wrapped onto more lines, never clipped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from torchvat.report.style import OKABE_ITO, color_for, pyplot

__all__ = [
    "DPI",
    "perturbation_panel",
    "plot_comparison",
    "plot_decision_boundaries",
    "plot_learning_curves",
    "plot_perturbation_grid",
    "plot_robustness",
]

#: Resolution of every saved figure, in dots per inch.
DPI = 120

_CLASS_COLORS = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
_CLASS_MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*")


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    plt = pyplot()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, facecolor="white")
    plt.close(fig)
    return out


def _wrap(fig: Any, text: str, width: float, fontsize: float) -> str:
    """``text`` with line breaks so that no line is wider than ``width`` inches at ``fontsize`` points.

    Words are kept whole (one longer than the width gets a line of its own); existing line
    breaks are kept.
    """
    renderer = fig.canvas.get_renderer()
    probe = fig.text(0, 0, "", fontsize=fontsize)
    try:

        def inches(line: str) -> float:
            probe.set_text(line)
            return probe.get_window_extent(renderer).width / fig.dpi

        lines: list[str] = []
        for paragraph in text.split("\n"):
            line = ""
            for word in paragraph.split(" "):
                candidate = f"{line} {word}" if line else word
                if line and inches(candidate) > width:
                    lines.append(line)
                    line = word
                else:
                    line = candidate
            lines.append(line)
        return "\n".join(lines)
    finally:
        probe.remove()


def _suptitle(fig: Any, text: str, fontsize: float) -> None:
    """A figure title, wrapped to the figure's width (less a margin)."""
    fig.suptitle(_wrap(fig, text, fig.get_figwidth() - 0.3, fontsize), fontsize=fontsize)


def _axes_title(ax: Any, text: str) -> None:
    """An axes title, wrapped to the axes' width as the layout leaves it (beside a legend outside the axes)."""
    fig = ax.get_figure()
    from matplotlib.font_manager import FontProperties

    points = FontProperties(size=pyplot().rcParams["axes.titlesize"]).get_size_in_points()
    fig.draw_without_rendering()  # runs the layout: the axes' final width
    width = ax.get_position().width * fig.get_figwidth()
    ax.set_title(_wrap(fig, text, width, points))


def _np(t: Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().float().numpy() if isinstance(t, Tensor) else np.asarray(t, dtype=np.float32)


@torch.no_grad()
def _probabilities(model: nn.Module, points: np.ndarray) -> np.ndarray:
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        logits = model(torch.from_numpy(points).to(device))
        return torch.softmax(logits.float(), dim=1).cpu().numpy()
    finally:
        model.train(was_training)


def plot_decision_boundaries(
    models: Mapping[str, nn.Module],
    path: str | os.PathLike[str],
    *,
    x_labeled: Tensor,
    y_labeled: Tensor,
    x_unlabeled: Tensor | None = None,
    titles: Mapping[str, str] | None = None,
    resolution: int = 200,
    suptitle: str | None = None,
) -> Path:
    """Decision boundaries of 2-D classifiers side by side, one panel per model.

    The background shows the predicted probability of class 1 (binary problems) or the
    predicted class shaded by confidence (more classes); the black line is the decision
    boundary. Labeled points are large markers with a black edge, one shape and color per
    class; unlabeled points are small and faint.

    Args:
        models: Panel name (e.g. the method) to a model mapping ``[N, 2]`` inputs to logits.
        path: The PNG to write.
        x_labeled: Labeled points ``[N_l, 2]``.
        y_labeled: Their classes ``[N_l]``.
        x_unlabeled: Unlabeled points ``[N_u, 2]``, or ``None``.
        titles: Panel titles by name (default: the names).
        resolution: Grid points per axis.
        suptitle: A title above all panels.

    Returns:
        The path written.

    Raises:
        ValueError: If there are no models or the inputs are not 2-D points.

    Example:
        >>> import tempfile, os
        >>> m = torch.nn.Linear(2, 2)
        >>> x = torch.randn(10, 2); y = torch.arange(10) % 2
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = plot_decision_boundaries({"linear": m}, os.path.join(d, "b.png"),
        ...                                  x_labeled=x, y_labeled=y, resolution=20)
        ...     p.name
        'b.png'
    """
    if not models:
        raise ValueError("models must hold at least one model, got none")
    xl = _np(x_labeled)
    yl = _np(y_labeled).astype(np.int64)
    if xl.ndim != 2 or xl.shape[1] != 2:
        raise ValueError(f"x_labeled must have shape [N, 2] (2-D points), got {tuple(xl.shape)}")
    xu = None if x_unlabeled is None else _np(x_unlabeled)
    pts = xl if xu is None or len(xu) == 0 else np.concatenate([xl, xu])
    lo, hi = pts.min(0), pts.max(0)
    pad = 0.12 * (hi - lo) + 1e-6
    lo, hi = lo - pad, hi + pad
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)

    plt = pyplot()
    from matplotlib.colors import LinearSegmentedColormap, to_rgb

    cmap = LinearSegmentedColormap.from_list("tv_div", [_CLASS_COLORS[0], "#F7F7F7", _CLASS_COLORS[1]])
    n = len(models)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.8), layout="constrained", squeeze=False)
    titles = dict(titles or {})
    for ax, (name, model) in zip(axes[0], models.items(), strict=True):
        probs = _probabilities(model, grid)
        k = probs.shape[1]
        if k == 2:
            p1 = probs[:, 1].reshape(gx.shape)
            ax.contourf(gx, gy, p1, levels=np.linspace(0, 1, 21), cmap=cmap, alpha=0.55, antialiased=True)
            ax.contour(gx, gy, p1, levels=[0.5], colors="black", linewidths=2.0)
        else:
            cls = probs.argmax(1).reshape(gx.shape)
            conf = probs.max(1).reshape(gx.shape)
            rgb = np.array([to_rgb(_CLASS_COLORS[c % len(_CLASS_COLORS)]) for c in range(k)])
            img = rgb[cls] * conf[..., None] * 0.55 + (1 - conf[..., None] * 0.55)
            ax.imshow(img, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), aspect="auto")
            ax.contour(gx, gy, cls, levels=np.arange(k) + 0.5, colors="black", linewidths=1.5)
        if xu is not None and len(xu):
            ax.scatter(xu[:, 0], xu[:, 1], s=6, c="#444444", alpha=0.25, linewidths=0, label="unlabeled")
        for c in np.unique(yl):
            sel = yl == c
            ax.scatter(
                xl[sel, 0],
                xl[sel, 1],
                s=110,
                marker=_CLASS_MARKERS[c % len(_CLASS_MARKERS)],
                c=_CLASS_COLORS[c % len(_CLASS_COLORS)],
                edgecolors="black",
                linewidths=1.4,
                zorder=5,
                label=f"labeled, class {c}",
            )
        ax.set_title(titles.get(name, name))
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for side in ("top", "right"):
            ax.spines[side].set_visible(True)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), frameon=False, markerscale=1.0)
    if suptitle:
        _suptitle(fig, suptitle, 13)
    return _save(fig, path)


def plot_learning_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    path: str | os.PathLike[str],
    *,
    metric: str | None = None,
    title: str | None = None,
) -> Path:
    """Held-out error and training loss against the iteration, one line per run.

    Args:
        histories: Run name (e.g. the method) to its evaluation records, as
            :attr:`torchvat.train.TrainResult.history` holds them (``step``,
            ``test_error``/``val_error``, ``train_loss``).
        path: The PNG to write.
        metric: The error to plot (default: ``test_error``, else ``val_error``).
        title: A title above both panels.

    Returns:
        The path written.

    Raises:
        ValueError: If ``histories`` is empty.

    Example:
        >>> import tempfile, os
        >>> h = [{"step": 10, "test_error": 0.3, "train_loss": 0.9},
        ...      {"step": 20, "test_error": 0.2, "train_loss": 0.5}]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     plot_learning_curves({"vat": h}, os.path.join(d, "c.png")).suffix
        '.png'
    """
    if not histories:
        raise ValueError("histories must hold at least one run, got none")
    if metric is None:
        first = next((r for h in histories.values() for r in h), {})
        metric = "test_error" if "test_error" in first or "val_error" not in first else "val_error"
    plt = pyplot()
    fig, (ax_err, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for i, (name, hist) in enumerate(histories.items()):
        color = color_for(name, i)
        steps = [r["step"] for r in hist if metric in r]
        errs = [100.0 * r[metric] for r in hist if metric in r]
        if steps:
            ax_err.plot(steps, errs, color=color, lw=2, marker="o" if len(steps) < 15 else None, ms=4, label=name)
        lsteps = [r["step"] for r in hist if "train_loss" in r]
        losses = [r["train_loss"] for r in hist if "train_loss" in r]
        if lsteps:
            ax_loss.plot(lsteps, losses, color=color, lw=2, marker="o" if len(lsteps) < 15 else None, ms=4, label=name)
    ax_err.set_xlabel("iteration")
    ax_err.set_ylabel(f"{metric.replace('_', ' ')} (%)")
    ax_err.set_title(f"Held-out {metric.split('_')[0]} error")
    ax_err.set_ylim(bottom=0)
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("training loss (mean since last evaluation)")
    ax_loss.set_title("Training objective")
    if any(r.get("train_loss", 1.0) > 0 for h in histories.values() for r in h):
        positive = [r["train_loss"] for h in histories.values() for r in h if r.get("train_loss", 0) > 0]
        if positive and max(positive) / max(min(positive), 1e-12) > 100:
            ax_loss.set_yscale("log")
    if ax_err.get_legend_handles_labels()[0]:
        ax_err.legend(frameon=False)
    else:
        ax_err.text(0.5, 0.5, "no held-out data", ha="center", va="center", transform=ax_err.transAxes, color="0.4")
    if title:
        _suptitle(fig, title, 13)
    return _save(fig, path)


def plot_comparison(
    results: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    *,
    ylabel: str = "test error (%)",
    title: str | None = None,
    scale: float = 100.0,
) -> Path:
    """Bar chart of the mean per method with standard-deviation error bars and each seed as a dot.

    Args:
        results: Method name to its values over seeds (errors as fractions by default).
        path: The PNG to write.
        ylabel: The y-axis label.
        title: The figure title.
        scale: Factor applied to the values before plotting (100: fractions to percent).

    Returns:
        The path written.

    Raises:
        ValueError: If ``results`` is empty or a method has no values.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     plot_comparison({"supervised": [0.2, 0.18], "vat": [0.02, 0.01]},
        ...                     os.path.join(d, "bar.png")).name
        'bar.png'
    """
    if not results:
        raise ValueError("results must hold at least one method, got none")
    for name, values in results.items():
        if len(values) == 0:
            raise ValueError(f"results[{name!r}] must hold at least one value, got none")
    plt = pyplot()
    names = list(results)
    means = [scale * float(np.mean(results[n])) for n in names]
    stds = [scale * float(np.std(results[n], ddof=1)) if len(results[n]) > 1 else 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.4 * len(names) + 2), 4.2), layout="constrained")
    xs = np.arange(len(names))
    colors = [color_for(n, i) for i, n in enumerate(names)]
    ax.bar(xs, means, yerr=stds, color=colors, alpha=0.85, capsize=6, edgecolor="black", linewidth=0.8)
    rng = np.random.default_rng(0)
    for x, n in zip(xs, names, strict=True):
        vals = scale * np.asarray(results[n], dtype=float)
        jitter = rng.uniform(-0.12, 0.12, size=len(vals)) if len(vals) > 1 else np.zeros(1)
        ax.scatter(x + jitter, vals, s=22, c="black", zorder=5, alpha=0.8)
    for x, m, s in zip(xs, means, stds, strict=True):
        ax.annotate(f"{m:.2f}", (x, m + s), xytext=(0, 4), textcoords="offset points", ha="center", fontsize=10)
    ax.set_xticks(xs, names)
    ax.set_ylabel(ylabel)
    # every seed's dot on the chart, the outliers included
    dots = scale * np.concatenate([np.asarray(v, dtype=float) for v in results.values()])
    top = max(max(m + s for m, s in zip(means, stds, strict=True)), float(dots.max()))
    bottom = min(0.0, float(dots.min()))
    ax.set_ylim(bottom, top * 1.15 + 1e-9)
    ax.grid(axis="x", visible=False)
    if title:
        _axes_title(ax, title)
    return _save(fig, path)


def plot_robustness(
    eps: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    *,
    xlabel: str = "perturbation size ε (L2 norm)",
    title: str | None = None,
    train_eps: float | None = None,
) -> Path:
    """Accuracy against perturbation size, one line per perturbation kind.

    Args:
        eps: The perturbation sizes.
        curves: Perturbation kind to accuracies (fractions), one per ``eps``.
        path: The PNG to write.
        xlabel: The x-axis label.
        title: The figure title.
        train_eps: The training ε, drawn as a dotted vertical line when given.

    Returns:
        The path written.

    Raises:
        ValueError: If a curve's length differs from ``eps``.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     plot_robustness([0, 1], {"noise": [0.9, 0.8]}, os.path.join(d, "r.png")).name
        'r.png'
    """
    for name, acc in curves.items():
        if len(acc) != len(eps):
            raise ValueError(f"curves[{name!r}] must have {len(eps)} values like eps, got {len(acc)}")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    markers = ("o", "s", "^", "D", "v")
    for i, (name, acc) in enumerate(curves.items()):
        ax.plot(
            list(eps),
            [100.0 * a for a in acc],
            color=OKABE_ITO[i % len(OKABE_ITO)],
            marker=markers[i % len(markers)],
            lw=2,
            ms=5,
            label=name,
        )
    if train_eps is not None and math.isfinite(train_eps):
        ax.axvline(train_eps, color="#555555", ls=":", lw=1.5, label=f"training ε = {train_eps:.3g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 101)
    fig.legend(loc="outside right upper", frameon=False)  # beside the axes: it hides no curve
    if title:  # over the axes only, clear of the legend beside them
        _axes_title(ax, title)
    return _save(fig, path)


def perturbation_panel(r: np.ndarray, *, magnify: float | None = None) -> tuple[np.ndarray, float]:
    """One perturbation ``[C, H, W]`` as a displayable image in ``[0, 1]``, 0 mapped to the middle (0.5).

    Scaled to its own range: the entry of largest magnitude reaches 0 or 1 (``magnify=None``), or
    multiplied by ``magnify`` (values past the range are clipped). One channel gives an ``[H, W]``
    array (for a diverging color map); three give ``[H, W, 3]`` in color.

    Args:
        r: The perturbation.
        magnify: A fixed factor instead of the perturbation's own range.

    Returns:
        The image and the perturbation value shown at the ends of the scale (``±limit``).

    Example:
        >>> img, limit = perturbation_panel(np.array([[[1e-4, -2e-4]]]))
        >>> img.tolist(), limit
        ([[0.75, 0.0]], 0.0002)
    """
    limit = float(np.abs(r).max()) if magnify is None else 0.5 / magnify
    limit = limit or 1.0
    shown = np.clip(0.5 + r / (2 * limit), 0.0, 1.0)
    return (shown[0] if shown.shape[0] == 1 else shown.transpose(1, 2, 0)), limit


def plot_perturbation_grid(
    x: Tensor,
    r: Tensor,
    path: str | os.PathLike[str],
    *,
    pred_before: Sequence[int],
    prob_before: Sequence[float],
    pred_after: Sequence[int],
    prob_after: Sequence[float],
    labels: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    magnify: float | None = None,
    title: str | None = None,
) -> Path:
    """The panda/gibbon picture: input, magnified perturbation and perturbed input per row.

    Each row's perturbation is scaled to its own range (:func:`perturbation_panel`): its largest
    entry fills the color scale, 0 is the middle gray, and an RGB perturbation is shown in color
    (a mean over the channels would cancel). The column title says so and gives the range, so a
    perturbation a thousand times smaller than the image is still visible. ``magnify`` instead
    multiplies every row by one factor. Input and perturbed input share one display range so the
    change is visible as it is.

    Args:
        x: Images ``[N, C, H, W]``.
        r: Perturbations of the same shape.
        path: The PNG to write.
        pred_before: Predicted classes of ``x``.
        prob_before: Their probabilities.
        pred_after: Predicted classes of ``x + r``.
        prob_after: Their probabilities.
        labels: True classes, shown when given.
        class_names: Class names by index.
        magnify: Factor the perturbation is multiplied by for display (one factor for every row,
            written in the column title); ``None`` scales each row to its own range.
        title: A title above the grid.

    Returns:
        The path written.

    Raises:
        ValueError: If ``x`` is not a batch of images or ``r`` has another shape.
    """
    xs, rs = _np(x), _np(r)
    if xs.ndim != 4 or xs.shape[1] not in (1, 3):
        raise ValueError(f"x must be images of shape [N, C, H, W] with C in (1, 3), got {tuple(xs.shape)}")
    if rs.shape != xs.shape:
        raise ValueError(f"r must have the shape of x {tuple(xs.shape)}, got {tuple(rs.shape)}")
    n = xs.shape[0]

    def name(c: int) -> str:
        return class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)

    plt = pyplot()
    fig, axes = plt.subplots(n, 3, figsize=(7.8, 2.3 * n + 0.6), layout="constrained", squeeze=False)
    for i in range(n):
        both = np.stack([xs[i], xs[i] + rs[i]])
        lo, hi = float(both.min()), float(both.max())
        scale = (hi - lo) or 1.0
        for j, img in enumerate((xs[i], None, xs[i] + rs[i])):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if img is None:
                shown, limit = perturbation_panel(rs[i], magnify=magnify)
                cmap = "PuOr" if shown.ndim == 2 else None
                ax.imshow(shown, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
                norm = float(np.sqrt((rs[i] ** 2).sum()))
                shown_as = f"×{magnify:.3g}" if magnify is not None else f"own range ±{limit:.2g}"
                ax.set_title(f"perturbation ({shown_as})\n‖r‖₂ = {norm:.3g}", fontsize=10)
                continue
            shown = (img - lo) / scale
            ax.imshow(
                shown[0] if shown.shape[0] == 1 else shown.transpose(1, 2, 0).clip(0, 1),
                cmap="gray",
                vmin=0,
                vmax=1,
                interpolation="nearest",
            )
            if j == 0:
                truth = f"label {name(int(labels[i]))}\n" if labels is not None else ""
                ax.set_title(f"{truth}pred {name(int(pred_before[i]))} ({100 * prob_before[i]:.0f}%)", fontsize=10)
            else:
                flipped = int(pred_after[i]) != int(pred_before[i])
                ax.set_title(
                    f"perturbed\npred {name(int(pred_after[i]))} ({100 * prob_after[i]:.0f}%)",
                    fontsize=10,
                    color="#D55E00" if flipped else "black",
                    fontweight="bold" if flipped else "normal",
                )
    if title:
        _suptitle(fig, title, 12)
    return _save(fig, path)
