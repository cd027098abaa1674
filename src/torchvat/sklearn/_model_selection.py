"""Cross-validation of semi-supervised estimators on the labels a user has.

scikit-learn's splitters treat every row alike: with ``y == -1`` marking unlabeled rows they put
unlabeled rows in the test folds (where no score can be computed) and take them out of training.
:class:`LabeledKFold` folds the labeled rows only and keeps every unlabeled row in every training
fold, so ``cross_val_score`` and ``GridSearchCV`` measure what a semi-supervised method does with
the unlabeled data, on held-out labels.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.model_selection import BaseCrossValidator, KFold, StratifiedKFold
from sklearn.utils.validation import column_or_1d

from torchvat.sklearn._base import unlabeled_mask

__all__ = ["LabeledKFold"]


class LabeledKFold(BaseCrossValidator):
    r"""K-fold cross-validation over the labeled rows; every unlabeled row trains in every fold.

    The labeled rows (those of ``y`` that are not ``unlabeled_label``) are split into
    ``n_splits`` folds, stratified by class by default; each fold is the test set once, and the
    training set of a split is the other labeled rows plus **all** unlabeled rows. Test sets hold
    labeled rows only, so any scorer works. This is how the VAT papers choose :math:`\epsilon`
    (on held-out labels), and how to check, on one's own data, that a regularizer helps: compare
    ``cross_val_score`` of ``VATClassifier()`` with that of ``VATClassifier(method="supervised")``
    (BENCHMARKS.md §6 measures how well this verdict predicts the test set's).

    Args:
        n_splits: Number of folds, at least 2 and at most the number of labeled rows (with
            ``stratify``, scikit-learn's ``StratifiedKFold`` warns when a class has fewer
            labeled rows than folds).
        stratify: Keep each class's share of the labeled rows in every fold (classification).
            Use ``False`` for regression targets (unlabeled rows marked NaN).
        shuffle: Shuffle the labeled rows before folding.
        random_state: Seed of the shuffle (only with ``shuffle=True``).
        unlabeled_label: The marker of unlabeled rows in ``y``: ``-1`` (scikit-learn's
            convention) or ``float("nan")`` for regression targets.

    Raises:
        ValueError: From :meth:`split`, if ``y`` is missing or has fewer labeled rows than
            ``n_splits``; at construction, if an argument is out of its range.

    Example:
        >>> y = np.array([0, 1, -1, 0, 1, -1, 0, 1])
        >>> for train, test in LabeledKFold(n_splits=3, shuffle=False).split(np.zeros((8, 1)), y):
        ...     print(train.tolist(), test.tolist())
        [2, 3, 4, 5, 6, 7] [0, 1]
        [0, 1, 2, 5, 6, 7] [3, 4]
        [0, 1, 2, 3, 4, 5] [6, 7]
    """

    n_splits: int
    stratify: bool
    shuffle: bool
    random_state: int | np.random.RandomState | None
    unlabeled_label: Any

    def __init__(
        self,
        n_splits: int = 5,
        *,
        stratify: bool = True,
        shuffle: bool = True,
        random_state: int | np.random.RandomState | None = None,
        unlabeled_label: Any = -1,
    ) -> None:
        if isinstance(n_splits, bool) or not isinstance(n_splits, numbers.Integral) or n_splits < 2:
            raise ValueError(f"n_splits must be an integer >= 2, got {n_splits!r}")
        for name, value in (("stratify", stratify), ("shuffle", shuffle)):
            if not isinstance(value, bool | np.bool_):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        self.n_splits = int(n_splits)
        self.stratify = bool(stratify)
        self.shuffle = bool(shuffle)
        self.random_state = random_state
        self.unlabeled_label = unlabeled_label

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """The number of splits, ``n_splits``."""
        return self.n_splits

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Indices of the training rows (the other labeled rows and every unlabeled row) and test rows.

        Args:
            X: The inputs ``[n_samples, ...]`` (only their number is used).
            y: The targets, ``unlabeled_label`` marking unlabeled rows.
            groups: Ignored.

        Yields:
            ``(train, test)`` index arrays, sorted.
        """
        if y is None:
            raise ValueError(
                "LabeledKFold.split needs y (the labels, unlabeled_label marking unlabeled rows), got None"
            )
        y = column_or_1d(np.asarray(y))
        n = len(y)
        if X is not None and len(X) != n:
            raise ValueError(f"X and y must have the same number of rows, got {len(X)} and {n}")
        unlabeled = unlabeled_mask(y, self.unlabeled_label)
        labeled_rows = np.flatnonzero(~unlabeled)
        if len(labeled_rows) < self.n_splits:
            raise ValueError(
                f"n_splits={self.n_splits} needs at least {self.n_splits} labeled rows, got {len(labeled_rows)} "
                f"(rows marked unlabeled_label={self.unlabeled_label!r} are never tested)"
            )
        seed = self.random_state if self.shuffle else None  # as scikit-learn's splitters take it
        folds: KFold | StratifiedKFold
        if self.stratify:
            folds = StratifiedKFold(self.n_splits, shuffle=self.shuffle, random_state=seed)
        else:
            folds = KFold(self.n_splits, shuffle=self.shuffle, random_state=seed)
        unlabeled_rows = np.flatnonzero(unlabeled)
        y_labeled = y[labeled_rows]
        for train_pos, test_pos in folds.split(np.zeros((len(labeled_rows), 1)), y_labeled):
            train = np.sort(np.concatenate([labeled_rows[train_pos], unlabeled_rows]))
            yield train, np.sort(labeled_rows[test_pos])
