r"""A data-derived perturbation size.

Every published VAT setting uses an absolute :math:`\epsilon` that only fits the preprocessing it
was tuned on (ZCA-whitened CIFAR-10, pixels in [0, 1], BERT embeddings). What matters is the size
of the perturbation relative to the spacing of the data: a perturbation should stay well inside the
neighbourhood of a point, where the label cannot change. :func:`suggest_eps` measures that spacing.
"""

from __future__ import annotations

import torch
from torch import Tensor

from torchvat.core._checks import check_choice, check_nonnegative

__all__ = ["suggest_eps"]

EPS_RULES = ("nn", "norm")
DEFAULT_NN_SCALE = 0.5


def suggest_eps(
    x: Tensor,
    *,
    rule: str = "nn",
    scale: float | None = None,
    max_queries: int = 1000,
    max_references: int = 10000,
    seed: int = 0,
) -> float:
    r"""Suggest an L2 perturbation size :math:`\epsilon` from the data.

    ``rule="nn"`` (default): :math:`\epsilon = s \cdot \mathrm{median}_i \min_{j \ne i} \lVert x_i - x_j \rVert_2`,
    the median distance from a point to its nearest neighbour, times ``scale`` :math:`s`
    (default 0.5: half-way to the nearest neighbour). Distances are computed for up to
    ``max_queries`` points against up to ``max_references`` points drawn at random (seeded), so the
    cost is bounded on large datasets; duplicates (distance 0) are ignored.

    ``rule="norm"``: :math:`\epsilon = s \cdot \mathrm{median}_i \lVert x_i \rVert_2` (default
    :math:`s = 0.05`), for data whose points are too sparse for neighbour distances to mean much.

    Args:
        x: training inputs [N, ...] (labeled and unlabeled together), N >= 2.
        rule: ``"nn"`` or ``"norm"``.
        scale: the factor :math:`s`; ``None`` for the rule's default.
        max_queries: number of points whose nearest-neighbour distance is measured.
        max_references: number of points searched for neighbours.
        seed: seed of the subsampling.

    Returns:
        :math:`\epsilon` as a Python float (> 0).

    Example:
        >>> x = torch.arange(10.0).unsqueeze(1)  # points 1 apart on a line
        >>> suggest_eps(x)
        0.5
    """
    check_choice("rule", rule, EPS_RULES)
    if scale is not None:
        check_nonnegative("scale", scale, positive=True)
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1:
        raise TypeError(f"x must be a floating-point tensor [N, ...], got {type(x).__name__}")
    flat = x.detach().flatten(1).float() if x.ndim > 1 else x.detach().float().unsqueeze(1)
    n = flat.shape[0]
    if n < 2:
        raise ValueError(f"x must have at least 2 samples to suggest eps, got {n}")
    if not bool(torch.isfinite(flat).all()):
        raise ValueError("x contains NaN or Inf; cannot suggest eps")
    g = torch.Generator().manual_seed(seed)
    if rule == "norm":
        idx = torch.randperm(n, generator=g)[:max_queries].to(flat.device)
        value = (scale if scale is not None else 0.05) * torch.linalg.vector_norm(flat[idx], dim=1).median()
    else:
        ref_idx = torch.randperm(n, generator=g)[: min(n, max_references)].to(flat.device)
        q_idx = ref_idx[: min(len(ref_idx), max_queries)]
        ref, query = flat[ref_idx], flat[q_idx]
        nearest = []
        for start in range(0, len(query), 256):
            chunk = query[start : start + 256]
            dist = torch.cdist(chunk.double(), ref.double(), compute_mode="donot_use_mm_for_euclid_dist")
            rows = torch.arange(len(chunk), device=dist.device)
            dist[rows, rows + start] = float("inf")  # the query point itself (queries are the first references)
            dist[dist <= 0] = float("inf")  # exact duplicates
            nearest.append(dist.min(dim=1).values)
        nn_dist = torch.cat(nearest)
        nn_dist = nn_dist[torch.isfinite(nn_dist)]
        if nn_dist.numel() == 0:
            raise ValueError("all samples in x are identical; cannot suggest eps")
        value = (scale if scale is not None else DEFAULT_NN_SCALE) * nn_dist.median()
    eps = float(value)
    if eps <= 0:
        raise ValueError(f"the data gives eps = {eps}; pass eps explicitly")
    return eps
