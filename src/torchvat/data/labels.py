"""Choosing which training examples keep their labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["select_labels"]


def _as_label_tensor(y: Any) -> Tensor:
    """Turn a 1-D label array-like into an int64 CPU tensor."""
    t = y.detach().cpu() if isinstance(y, Tensor) else torch.as_tensor(np.asarray(y))
    if t.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"y must hold integer class indices, got dtype {t.dtype}")
    return t.to(torch.int64)


def select_labels(
    y: Tensor | np.ndarray,
    n_labels: int,
    *,
    n_classes: int | None = None,
    balanced: bool = True,
    seed: int = 0,
) -> Tensor:
    """Pick the indices of the examples that keep their labels.

    With ``balanced=True`` (the protocol of the VAT papers) every class gets
    ``n_labels // n_classes`` examples; when ``n_labels`` is not a multiple of
    ``n_classes`` the first ``n_labels % n_classes`` classes get one more. With
    ``balanced=False`` the examples are drawn uniformly without replacement.

    Args:
        y: Class indices of the whole pool, shape ``[N]``, all in ``[0, n_classes)``.
        n_labels: Number of labeled examples to select.
        n_classes: Number of classes; inferred as ``y.max() + 1`` when ``None``.
        balanced: Select the same number of examples from each class.
        seed: Seed of the random choice; the same seed gives the same indices.

    Returns:
        Sorted ``int64`` tensor of ``n_labels`` distinct indices into ``y``.

    Raises:
        ValueError: If ``n_labels`` is not positive or exceeds ``len(y)``, if it is smaller
            than ``n_classes`` when balanced, if a class has too few examples, or if ``y``
            holds values outside ``[0, n_classes)``.

    Example:
        >>> import torch
        >>> y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
        >>> idx = select_labels(y, 6, seed=0)
        >>> torch.bincount(y[idx]).tolist()
        [2, 2, 2]
    """
    labels = _as_label_tensor(y)
    n = labels.shape[0]
    if isinstance(n_labels, bool) or not isinstance(n_labels, int | np.integer):
        raise TypeError(f"n_labels must be an int, got {type(n_labels).__name__}")
    n_labels = int(n_labels)
    if n_labels <= 0:
        raise ValueError(f"n_labels must be a positive integer, got {n_labels}")
    if n_labels > n:
        raise ValueError(f"n_labels={n_labels} exceeds the number of examples len(y)={n}")
    if n_classes is None:
        n_classes = int(labels.max()) + 1
    if n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes}")
    if int(labels.min()) < 0 or int(labels.max()) >= n_classes:
        raise ValueError(
            f"y must hold class indices in [0, {n_classes}), got values in [{int(labels.min())}, {int(labels.max())}]"
        )
    gen = torch.Generator().manual_seed(int(seed))
    if not balanced:
        return torch.randperm(n, generator=gen)[:n_labels].sort().values
    if n_labels < n_classes:
        raise ValueError(
            f"balanced selection needs at least one label per class: "
            f"n_labels={n_labels} is smaller than n_classes={n_classes}"
        )
    per_class = [n_labels // n_classes + (c < n_labels % n_classes) for c in range(n_classes)]
    counts = torch.bincount(labels, minlength=n_classes).tolist()
    short = [(c, counts[c], k) for c, k in enumerate(per_class) if counts[c] < k]
    if short:
        detail = ", ".join(f"class {c} has {have} (needs {need})" for c, have, need in short)
        raise ValueError(f"too few examples for a balanced selection of {n_labels}: {detail}")
    # One random permutation of the pool, then the first k hits of each class: a stable
    # sort by class keeps the random order within each class.
    perm = torch.randperm(n, generator=gen)
    order = perm[torch.sort(labels[perm], stable=True).indices]
    starts = torch.cumsum(torch.tensor([0, *counts[:-1]]), 0).tolist()
    chosen = [order[s : s + k] for s, k in zip(starts, per_class, strict=True)]
    return torch.cat(chosen).sort().values
