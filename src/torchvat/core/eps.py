r"""A data-derived perturbation size.

Every published VAT setting uses an absolute :math:`\epsilon` that only fits the preprocessing it
was tuned on (ZCA-whitened CIFAR-10, pixels in [0, 1], BERT embeddings). What matters is the size
of the perturbation relative to the spacing of the data: a perturbation should stay well inside the
neighbourhood of a point, where the label cannot change. :func:`suggest_eps` measures that spacing.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from torchvat.core._checks import check_choice, check_nonnegative

__all__ = ["suggest_eps"]

EPS_RULES = ("labeled", "radius", "nn", "norm")
DEFAULT_SCALES = {"labeled": 0.75, "radius": 0.25, "nn": 0.5, "norm": 0.05}


def suggest_eps(
    x: Tensor,
    *,
    rule: str = "radius",
    scale: float | None = None,
    labeled: Tensor | None = None,
    max_queries: int = 1000,
    max_references: int = 10000,
    seed: int = 0,
) -> float:
    r"""Suggest an L2 perturbation size :math:`\epsilon` from the data.

    ``rule="radius"`` (default): :math:`\epsilon = s \cdot \mathrm{median}_i \lVert x_i - \bar x \rVert_2`,
    a quarter (``scale`` :math:`s = 0.25`) of the typical distance from a point to the data's mean.
    It follows any rescaling of the inputs and, unlike neighbour distances, does not shrink as
    more unlabeled points fill the space.

    ``rule="labeled"`` (the trainer's default, given the ``labeled`` inputs):
    :math:`\epsilon = s \cdot \mathrm{median}_{i} \min_j \lVert x_i - \ell_j \rVert_2`, three quarters
    (:math:`s = 0.75`) of the typical distance from a point of ``x`` (the unlabeled data) to its
    nearest labeled point :math:`\ell_j`: the distance over which VAT must carry the labels. It
    grows when there are fewer labels and, like the radius, does not shrink as unlabeled points
    fill the space. With ``labeled=None`` the points of ``x`` are the labeled ones (each one's
    nearest other point is used). Points of ``x`` that are labeled points themselves (``x`` holding
    the labeled rows too, as the trainer's unlabeled set does by default) are left out of the
    median, and when all are (fully labeled data), the rule is that of ``labeled=None``.
    Measured with torchvat's trainer (BENCHMARKS.md), the test error
    at this eps is within 10% of the best of an eps sweep on two moons (8 labels: eps 0.20-0.27),
    scikit-learn digits (100 labels: 1.09), and Fashion-MNIST with 100 labels (4.2; the radius rule's
    2.05 collapsed on one seed of three) and 1000 labels (3.4).

    ``rule="nn"``: :math:`\epsilon = s \cdot \mathrm{median}_i \min_{j \ne i} \lVert x_i - x_j \rVert_2`
    (default :math:`s = 0.5`), half-way to the nearest neighbour. Too small on densely sampled
    low-dimensional data (two moons with 1000 points: 0.012, where VAT needs ~0.3).

    ``rule="norm"``: :math:`\epsilon = s \cdot \mathrm{median}_i \lVert x_i \rVert_2` (default
    :math:`s = 0.05`), for embeddings and other data whose mean carries no meaning.

    Distances are computed for up to ``max_queries`` points (against up to ``max_references``
    points for ``"nn"``) drawn at random (seeded), so the cost is bounded on large datasets. The
    median is ``torch.median``'s, the lower of the two middle values for an even count.

    Args:
        x: training inputs [N, ...] (for ``"labeled"``: the unlabeled ones), N >= 2.
        rule: ``"labeled"``, ``"radius"``, ``"nn"`` or ``"norm"``.
        scale: the factor :math:`s`; ``None`` for the rule's default.
        max_queries: number of points whose nearest-neighbour distance is measured.
        max_references: number of points searched for neighbours.
        labeled: the labeled inputs [M, ...] for ``rule="labeled"`` (ignored by the other rules).
        seed: seed of the subsampling.

    Returns:
        :math:`\epsilon` as a Python float (> 0).

    Example:
        >>> x = torch.tensor([[-2.0], [-1.0], [0.0], [1.0], [2.0]])  # distances to the mean: median 1
        >>> suggest_eps(x)
        0.25
        >>> suggest_eps(torch.arange(10.0).unsqueeze(1), rule="nn")  # points 1 apart on a line
        0.5
        >>> suggest_eps(torch.arange(10.0).unsqueeze(1), rule="labeled", labeled=torch.tensor([[0.0], [9.0]]))
        1.5
    """
    check_choice("rule", rule, EPS_RULES)
    if scale is not None:
        check_nonnegative("scale", scale, positive=True)
    for name, count in (("max_queries", max_queries), ("max_references", max_references)):
        if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {count!r}")
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1:
        got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"x must be a floating-point tensor [N, ...], got {got}")
    flat = _rows(x)
    n = flat.shape[0]
    if n < 2:
        raise ValueError(f"x must have at least 2 samples to suggest eps, got {n}")
    if not bool(torch.isfinite(flat).all()):
        raise ValueError("x contains NaN or Inf; cannot suggest eps")
    g = torch.Generator().manual_seed(seed)
    s = scale if scale is not None else DEFAULT_SCALES[rule]
    ref = None
    if rule == "labeled" and labeled is not None:
        if not isinstance(labeled, Tensor) or not labeled.is_floating_point() or labeled.ndim < 1:
            raise TypeError(f"labeled must be a floating-point tensor [M, ...] or None, got {type(labeled).__name__}")
        ref = _rows(labeled)
        if ref.shape[0] == 0 or ref.shape[1] != flat.shape[1]:
            raise ValueError(
                f"labeled must hold at least 1 sample with x's {flat.shape[1]} features, "
                f"got shape {tuple(labeled.shape)}"
            )
        if not bool(torch.isfinite(ref).all()):
            raise ValueError("labeled contains NaN or Inf; cannot suggest eps")
    unit = _unit(flat, ref)
    s = s * unit  # distances are measured on the data divided by ``unit``, the rows drawn divided alone
    if ref is not None:
        ref = ref[torch.randperm(ref.shape[0], generator=g)[:max_references].to(ref.device)].to(flat.device) / unit
        query = flat[torch.randperm(n, generator=g)[:max_queries].to(flat.device)] / unit
        # points of x that are labeled points (x holds the labeled rows too, as the trainer's
        # unlabeled set does by default) say nothing of the distance to carry the labels over
        dist = _nearest_distances(query, ref, queries_lead_references=False)
        dist = dist[dist > 0]
        if dist.numel():
            return float(s * dist.median())
        # every point of x is a labeled one (fully labeled data): the distance between the points,
        # as with labeled=None, below
    if rule in ("norm", "radius"):
        idx = torch.randperm(n, generator=g)[: max(max_queries, 2)].to(flat.device)
        sample = (flat[idx] / unit).double()
        if rule == "radius":
            sample = sample - (flat / unit).double().mean(0)
        value = s * torch.linalg.vector_norm(sample, dim=1).median()
    else:
        ref_idx = torch.randperm(n, generator=g)[: min(n, max_references)].to(flat.device)
        q_idx = ref_idx[: min(len(ref_idx), max_queries)]
        nn_dist = _nearest_distances(flat[q_idx] / unit, flat[ref_idx] / unit, queries_lead_references=True)
        nn_dist = nn_dist[torch.isfinite(nn_dist)]
        if nn_dist.numel() == 0:
            raise ValueError("all samples in x are identical; cannot suggest eps")
        value = s * nn_dist.median()
    eps = float(value)
    if eps <= 0:
        raise ValueError(f"all samples in x are identical (the data gives eps = {eps}); pass eps explicitly")
    return eps


def _rows(t: Tensor) -> Tensor:
    """``t`` as rows ``[N, D]`` (a 1-D tensor is N one-feature rows), detached, float32 at least.

    float64 stays float64: cast to float32, points closer than float32's resolution at their
    offset merge, and finite values beyond 3.4e38 become ``inf``.
    """
    rows = t.detach().flatten(1) if t.ndim > 1 else t.detach().unsqueeze(1)
    return rows.to(torch.promote_types(rows.dtype, torch.float32))


def _unit(*rows: Tensor | None) -> float:
    """A power of two within a factor 2 of the largest magnitude in ``rows`` (1.0 for all zeros).

    Distances are measured on the rows divided by it: squared, float64 values beyond 1e154
    would overflow and below 1e-154 underflow. Dividing by a power of two is exact, so data of
    ordinary magnitude gives the same eps bit for bit.
    """
    top = max((max(float(r.amax()), -float(r.amin())) for r in rows if r is not None and r.numel()), default=0.0)
    return math.ldexp(1.0, math.frexp(top)[1] - 1) if top > 0 else 1.0


def _nearest_distances(query: Tensor, ref: Tensor, *, queries_lead_references: bool) -> Tensor:
    """Distance from each query row to its nearest row of ``ref`` (float64, in chunks of 256 rows).

    With ``queries_lead_references`` the queries are the first rows of ``ref``: a point is not its
    own neighbour and exact duplicates do not count (their distance is ``inf``, dropped by the caller).
    """
    nearest = []
    for start in range(0, len(query), 256):
        chunk = query[start : start + 256]
        dist = torch.cdist(chunk.double(), ref.double(), compute_mode="donot_use_mm_for_euclid_dist")
        if queries_lead_references:
            rows = torch.arange(len(chunk), device=dist.device)
            dist[rows, rows + start] = float("inf")  # the query point itself
            dist[dist <= 0] = float("inf")  # exact duplicates
        nearest.append(dist.min(dim=1).values)
    return torch.cat(nearest)
