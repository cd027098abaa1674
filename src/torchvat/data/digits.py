"""scikit-learn's bundled 8x8 handwritten digits as a semi-supervised problem."""

from __future__ import annotations

import numpy as np
import torch

from torchvat._extras import require
from torchvat.data.container import SemiSupervisedData
from torchvat.data.splits import semi_supervised_split

__all__ = ["load_digits_data"]


def load_digits_data(
    n_labels: int | None = 100,
    test_fraction: float = 0.3,
    seed: int = 0,
    *,
    as_images: bool = False,
    n_val: int = 0,
    balanced: bool = True,
    unlabeled_includes_labeled: bool = True,
) -> SemiSupervisedData:
    """Load the 1797 bundled 8x8 digits (no download), scaled to ``[0, 1]``.

    A stratified, seeded ``test_fraction`` of the images is held out as the test set;
    ``n_labels`` class-balanced labels are drawn from the rest, whose other images are
    unlabeled.

    Args:
        n_labels: Number of labeled examples (``None``: keep every label).
        test_fraction: Fraction held out for testing, in ``(0, 1)``.
        seed: Seed of the test split and of the label selection.
        as_images: Inputs of shape ``[1, 8, 8]`` instead of flat ``[64]``.
        n_val: Validation examples held out from the training part.
        balanced: Select the same number of labels per class.
        unlabeled_includes_labeled: Whether the unlabeled set holds the labeled inputs.

    Returns:
        The semi-supervised problem with ten classes.

    Raises:
        ValueError: If ``test_fraction`` is not in ``(0, 1)``.

    Example:
        >>> data = load_digits_data(n_labels=50)
        >>> data.n_labeled, data.n_unlabeled, data.x_test.shape[0]
        (50, 1257, 540)
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    datasets = require("sklearn.datasets", extra="cli", feature="the digits data set")
    model_selection = require("sklearn.model_selection", extra="cli", feature="the digits data set")
    bunch = datasets.load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = model_selection.train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    shape = (1, 8, 8) if as_images else (64,)

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).reshape(a.shape[0], *shape)

    return semi_supervised_split(
        tensor(x_tr),
        torch.from_numpy(y_tr),
        n_labels=n_labels,
        n_classes=10,
        x_test=tensor(x_te),
        y_test=torch.from_numpy(y_te),
        n_val=n_val,
        balanced=balanced,
        seed=seed,
        unlabeled_includes_labeled=unlabeled_includes_labeled,
        name="digits",
        classes=[str(d) for d in range(10)],
    )
