"""Turning a fully labeled training pool into a semi-supervised problem."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from torchvat.data.container import SemiSupervisedData
from torchvat.data.labels import select_labels

__all__ = ["semi_supervised_split"]


def _complement(n: int, idx: Tensor) -> Tensor:
    """Indices in ``range(n)`` that are not in ``idx``, in increasing order."""
    keep = torch.ones(n, dtype=torch.bool)
    keep[idx] = False
    return keep.nonzero().squeeze(1)


def semi_supervised_split(
    x: Tensor,
    y: Tensor,
    *,
    n_labels: int | None,
    name: str,
    n_classes: int | None = None,
    x_test: Tensor | None = None,
    y_test: Tensor | None = None,
    n_val: int = 0,
    balanced: bool = True,
    seed: int = 0,
    unlabeled_includes_labeled: bool = True,
    classes: Sequence[str] | None = None,
) -> SemiSupervisedData:
    """Hide all but ``n_labels`` labels of a labeled training pool.

    First ``n_val`` random examples are held out as a validation set (they are neither
    labeled nor unlabeled training data), then :func:`select_labels` picks the labeled
    examples among the rest. The unlabeled set is the rest of the pool, plus the labeled
    examples when ``unlabeled_includes_labeled`` (the protocol of the VAT papers).

    Args:
        x: Training inputs, shape ``[N, ...]``, floating point.
        y: Training class indices, shape ``[N]``.
        n_labels: Number of labeled examples, or ``None`` to keep every label.
        name: Dataset name stored in the result.
        n_classes: Number of classes; inferred from the labels when ``None``.
        x_test: Test inputs, or ``None``.
        y_test: Test labels, or ``None``.
        n_val: Number of validation examples held out from the pool.
        balanced: Select the same number of labels from each class.
        seed: Seed of the validation and label selection.
        unlabeled_includes_labeled: Whether the unlabeled set contains the labeled inputs.
        classes: Class names in index order, if known.

    Returns:
        The semi-supervised problem.

    Raises:
        ValueError: If ``x`` and ``y`` disagree in length, ``n_val`` is negative or leaves
            no training examples, or the label selection is impossible.

    Example:
        >>> import torch
        >>> x, y = torch.randn(100, 3), torch.arange(100) % 2
        >>> data = semi_supervised_split(x, y, n_labels=10, n_val=20, name="toy")
        >>> data.n_labeled, data.n_unlabeled, data.x_val.shape[0]
        (10, 80, 20)
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of rows, got {x.shape[0]} and {y.shape[0]}")
    y = y.to(torch.int64)
    n = x.shape[0]
    if n_classes is None:
        n_classes = int(y.max()) + 1 if y_test is None else int(max(y.max(), y_test.max())) + 1
    if n_val < 0 or n_val >= n:
        raise ValueError(f"n_val must be in [0, {n}) for a pool of {n} examples, got {n_val}")
    pool = torch.arange(n)
    x_val = y_val = None
    if n_val:
        gen = torch.Generator().manual_seed(int(seed) + 0x5EED)
        val_idx = torch.randperm(n, generator=gen)[:n_val].sort().values
        pool = _complement(n, val_idx)
        x_val, y_val = x[val_idx], y[val_idx]
    y_pool = y[pool]
    if n_labels is None:
        lab = torch.arange(pool.shape[0])
    else:
        lab = select_labels(y_pool, n_labels, n_classes=n_classes, balanced=balanced, seed=seed)
    if unlabeled_includes_labeled:
        x_unlabeled = x if n_val == 0 else x[pool]
    else:
        x_unlabeled = x[pool[_complement(pool.shape[0], lab)]]
    return SemiSupervisedData(
        x_labeled=x[pool[lab]],
        y_labeled=y_pool[lab],
        x_unlabeled=x_unlabeled,
        n_classes=n_classes,
        name=name,
        x_test=x_test,
        y_test=None if y_test is None else y_test.to(torch.int64),
        x_val=x_val,
        y_val=y_val,
        classes=None if classes is None else list(classes),
        unlabeled_includes_labeled=unlabeled_includes_labeled,
    )
