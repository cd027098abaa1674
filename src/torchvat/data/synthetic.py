"""The two-dimensional synthetic sets of the VAT paper (two moons, two circles)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from torchvat._extras import require
from torchvat.data.container import SemiSupervisedData
from torchvat.data.splits import semi_supervised_split

__all__ = ["make_circles_data", "make_moons_data"]


def _two_seeds(seed: int) -> tuple[int, int]:
    """Independent integer seeds for the training and the test draw."""
    train, test = np.random.SeedSequence(seed).spawn(2)
    return int(train.generate_state(1)[0]), int(test.generate_state(1)[0])


def _synthetic(
    sample: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
    *,
    name: str,
    n_labels: int,
    n_samples: int,
    n_test: int,
    seed: int,
    unlabeled_includes_labeled: bool,
) -> SemiSupervisedData:
    if n_samples < 2:
        raise ValueError(f"n_samples must be at least 2, got {n_samples}")
    if n_test < 0:
        raise ValueError(f"n_test must be non-negative, got {n_test}")
    seed_train, seed_test = _two_seeds(seed)
    x, y = sample(n_samples, seed_train)
    x_test = y_test = None
    if n_test:
        xt, yt = sample(n_test, seed_test)
        x_test, y_test = torch.from_numpy(xt.astype(np.float32)), torch.from_numpy(yt)
    return semi_supervised_split(
        torch.from_numpy(x.astype(np.float32)),
        torch.from_numpy(y.astype(np.int64)),
        n_labels=n_labels,
        n_classes=2,
        x_test=x_test,
        y_test=None if y_test is None else y_test.to(torch.int64),
        seed=seed,
        unlabeled_includes_labeled=unlabeled_includes_labeled,
        name=name,
        classes=["0", "1"],
    )


def make_moons_data(
    n_labels: int = 8,
    n_samples: int = 1000,
    *,
    noise: float = 0.1,
    n_test: int = 1000,
    seed: int = 0,
    unlabeled_includes_labeled: bool = True,
) -> SemiSupervisedData:
    """Two interleaving half circles with a handful of labels (VAT paper, Sec. synthetic).

    The training and test points are drawn with :func:`sklearn.datasets.make_moons` from
    two independent seeds derived from ``seed``; ``n_labels`` class-balanced training
    points keep their labels.

    Args:
        n_labels: Number of labeled training points (half per class).
        n_samples: Number of training points.
        noise: Standard deviation of the Gaussian noise added to the points.
        n_test: Number of test points (0 for no test set).
        seed: Seed of the draws and of the label selection.
        unlabeled_includes_labeled: Whether the unlabeled set holds the labeled points.

    Returns:
        The semi-supervised problem, inputs of shape ``[2]``.

    Example:
        >>> data = make_moons_data(n_labels=8, n_samples=200, n_test=50)
        >>> data.n_labeled, data.n_unlabeled, data.x_test.shape
        (8, 200, torch.Size([50, 2]))
    """

    def sample(n: int, s: int) -> tuple[np.ndarray, np.ndarray]:
        datasets = require("sklearn.datasets", extra="cli", feature="the two moons data set")
        return datasets.make_moons(n_samples=n, noise=noise, random_state=s)

    return _synthetic(
        sample,
        name="moons",
        n_labels=n_labels,
        n_samples=n_samples,
        n_test=n_test,
        seed=seed,
        unlabeled_includes_labeled=unlabeled_includes_labeled,
    )


def make_circles_data(
    n_labels: int = 8,
    n_samples: int = 1000,
    *,
    noise: float = 0.05,
    factor: float = 0.5,
    n_test: int = 1000,
    seed: int = 0,
    unlabeled_includes_labeled: bool = True,
) -> SemiSupervisedData:
    """Two concentric circles with a handful of labels (VAT paper, Sec. synthetic).

    Drawn with :func:`sklearn.datasets.make_circles`; see :func:`make_moons_data`.

    Args:
        n_labels: Number of labeled training points (half per class).
        n_samples: Number of training points.
        noise: Standard deviation of the Gaussian noise added to the points.
        factor: Ratio of the inner to the outer circle's radius, in ``(0, 1)``.
        n_test: Number of test points (0 for no test set).
        seed: Seed of the draws and of the label selection.
        unlabeled_includes_labeled: Whether the unlabeled set holds the labeled points.

    Returns:
        The semi-supervised problem, inputs of shape ``[2]``.

    Example:
        >>> data = make_circles_data(n_samples=100, n_test=0)
        >>> data.n_labeled, data.x_test is None
        (8, True)
    """

    def sample(n: int, s: int) -> tuple[np.ndarray, np.ndarray]:
        datasets = require("sklearn.datasets", extra="cli", feature="the two circles data set")
        return datasets.make_circles(n_samples=n, noise=noise, factor=factor, random_state=s)

    return _synthetic(
        sample,
        name="circles",
        n_labels=n_labels,
        n_samples=n_samples,
        n_test=n_test,
        seed=seed,
        unlabeled_includes_labeled=unlabeled_includes_labeled,
    )
