"""The in-memory container every torchvat dataset loader returns."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SemiSupervisedData"]


def _check_pair(x: Tensor | None, y: Tensor | None, split: str, n_classes: int) -> None:
    """Check that an optional (inputs, labels) split is consistent."""
    if (x is None) != (y is None):
        raise ValueError(
            f"x_{split} and y_{split} must both be tensors or both be None, "
            f"got x_{split}={'None' if x is None else 'a tensor'} and "
            f"y_{split}={'None' if y is None else 'a tensor'}"
        )
    if x is None or y is None:
        return
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"x_{split} and y_{split} must be torch.Tensor, got {type(x).__name__} and {type(y).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x_{split} must be a floating point tensor, got dtype {x.dtype}")
    if y.dtype != torch.int64:
        raise TypeError(f"y_{split} must be an int64 tensor of class indices, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"y_{split} must be 1-D, got shape {tuple(y.shape)}")
    if x.ndim < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x_{split} and y_{split} must have the same number of rows, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(
            f"y_{split} must hold class indices in [0, {n_classes}), got values in [{int(y.min())}, {int(y.max())}]"
        )


@dataclass
class SemiSupervisedData:
    """Labeled, unlabeled and held-out tensors of one semi-supervised problem.

    Every loader in :mod:`torchvat.data` returns this container. Inputs are float tensors
    with the examples along the first dimension, labels are ``int64`` class indices.

    Args:
        x_labeled: Labeled inputs, shape ``[N_l, *input_shape]``.
        y_labeled: Class indices of the labeled inputs, shape ``[N_l]``.
        x_unlabeled: Unlabeled inputs, shape ``[N_u, *input_shape]`` (may have 0 rows).
        n_classes: Number of classes.
        name: Short name of the dataset, used in logs and reports.
        x_test: Test inputs, or ``None``.
        y_test: Test labels, or ``None``.
        x_val: Validation inputs held out from training, or ``None``.
        y_val: Validation labels, or ``None``.
        classes: Class names in index order, if known.
        unlabeled_includes_labeled: Whether ``x_unlabeled`` also contains the inputs of the
            labeled examples (the VAT papers use the whole training set as unlabeled data).

    Example:
        >>> import torch
        >>> data = SemiSupervisedData(
        ...     x_labeled=torch.zeros(4, 2), y_labeled=torch.tensor([0, 1, 0, 1]),
        ...     x_unlabeled=torch.zeros(10, 2), n_classes=2, name="toy")
        >>> data.input_shape
        (2,)
        >>> data.n_labeled, data.n_unlabeled
        (4, 10)
    """

    x_labeled: Tensor
    y_labeled: Tensor
    x_unlabeled: Tensor
    n_classes: int
    name: str
    x_test: Tensor | None = None
    y_test: Tensor | None = None
    x_val: Tensor | None = None
    y_val: Tensor | None = None
    classes: list[str] | None = None
    unlabeled_includes_labeled: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.n_classes, bool) or not isinstance(self.n_classes, int):
            raise TypeError(f"n_classes must be an int, got {type(self.n_classes).__name__}")
        if self.n_classes < 1:
            raise ValueError(f"n_classes must be a positive integer, got {self.n_classes}")
        _check_pair(self.x_labeled, self.y_labeled, "labeled", self.n_classes)
        _check_pair(self.x_test, self.y_test, "test", self.n_classes)
        _check_pair(self.x_val, self.y_val, "val", self.n_classes)
        if not isinstance(self.x_unlabeled, Tensor) or not self.x_unlabeled.is_floating_point():
            raise TypeError(
                "x_unlabeled must be a floating point torch.Tensor, got "
                f"{getattr(self.x_unlabeled, 'dtype', type(self.x_unlabeled).__name__)}"
            )
        shape = tuple(self.x_labeled.shape[1:])
        for split in ("unlabeled", "test", "val"):
            x = getattr(self, f"x_{split}")
            if x is not None and tuple(x.shape[1:]) != shape:
                raise ValueError(f"x_{split} must have input shape {shape} like x_labeled, got {tuple(x.shape[1:])}")
        if self.classes is not None:
            self.classes = [str(c) for c in self.classes]
            if len(self.classes) != self.n_classes:
                raise ValueError(f"classes must list n_classes={self.n_classes} names, got {len(self.classes)}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension."""
        return tuple(self.x_labeled.shape[1:])

    @property
    def n_labeled(self) -> int:
        """Number of labeled examples."""
        return int(self.x_labeled.shape[0])

    @property
    def n_unlabeled(self) -> int:
        """Number of unlabeled examples (rows of ``x_unlabeled``)."""
        return int(self.x_unlabeled.shape[0])

    def train_inputs(self) -> Tensor:
        """All training inputs, each once: what a preprocessing step should be fitted on.

        Returns:
            ``x_unlabeled`` when it already holds the labeled inputs, else the labeled
            and unlabeled inputs concatenated.
        """
        if self.unlabeled_includes_labeled:
            return self.x_unlabeled
        return torch.cat([self.x_labeled, self.x_unlabeled.to(self.x_labeled.device)])

    def map_inputs(self, fn: Callable[[Tensor], Tensor]) -> SemiSupervisedData:
        """Apply ``fn`` to every input tensor (labeled, unlabeled, test, validation).

        Args:
            fn: Function from an input batch to a transformed batch with the same rows.

        Returns:
            A new container; labels and metadata are shared with this one.
        """
        return dataclasses.replace(
            self,
            x_labeled=fn(self.x_labeled),
            x_unlabeled=fn(self.x_unlabeled),
            x_test=None if self.x_test is None else fn(self.x_test),
            x_val=None if self.x_val is None else fn(self.x_val),
        )

    def to(self, device: torch.device | str) -> SemiSupervisedData:
        """Move every tensor to ``device``.

        Args:
            device: Target device.

        Returns:
            A new container on ``device``.
        """

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return dataclasses.replace(
            self,
            x_labeled=self.x_labeled.to(device),
            y_labeled=self.y_labeled.to(device),
            x_unlabeled=self.x_unlabeled.to(device),
            x_test=move(self.x_test),
            y_test=move(self.y_test),
            x_val=move(self.x_val),
            y_val=move(self.y_val),
        )

    def summary(self) -> str:
        """Describe the splits in a few lines.

        Returns:
            A human-readable multi-line string.

        Example:
            >>> import torch
            >>> data = SemiSupervisedData(torch.zeros(2, 3), torch.tensor([0, 1]),
            ...                           torch.zeros(5, 3), n_classes=2, name="toy")
            >>> print(data.summary())
            toy: 2 classes, input shape (3,)
              labeled:   2 (per class: 1, 1)
              unlabeled: 5 (includes the labeled inputs)
              test:      none
        """
        counts = torch.bincount(self.y_labeled.cpu(), minlength=self.n_classes).tolist()
        per_class = ", ".join(str(c) for c in counts)
        note = "includes the labeled inputs" if self.unlabeled_includes_labeled else "disjoint"
        lines = [
            f"{self.name}: {self.n_classes} classes, input shape {self.input_shape}",
            f"  labeled:   {self.n_labeled} (per class: {per_class})",
            f"  unlabeled: {self.n_unlabeled} ({note})",
        ]
        if self.x_val is not None:
            lines.append(f"  val:       {self.x_val.shape[0]}")
        test = "none" if self.x_test is None else str(self.x_test.shape[0])
        lines.append(f"  test:      {test}")
        return "\n".join(lines)
