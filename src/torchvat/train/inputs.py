"""The checks of a trainer's inputs: the data splits, their dtypes, the labels against the outputs."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from torchvat.train.methods import CleanPass, Method

__all__ = ["as_tensor", "check_batch_size", "check_data", "check_dtypes", "check_labels", "required_tensor"]


def as_tensor(name: str, value: Any) -> Tensor | None:
    """``value`` as a tensor (NumPy arrays without a copy), or ``None``."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")
    return value


def required_tensor(name: str, value: Any) -> Tensor:
    """``value`` as a tensor (see :func:`as_tensor`); ``None`` is refused.

    Raises:
        TypeError: If ``value`` is neither a tensor nor a NumPy array.
    """
    tensor = as_tensor(name, value)
    if tensor is None:
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got NoneType")
    return tensor


def check_batch_size(batch_size: Any) -> None:
    """A prediction batch size: an integer >= 1, or ``None`` for the config's."""
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")


def check_data(t: dict[str, Tensor | None]) -> None:
    """The splits given to a trainer: labels with inputs, integer class indices, finite inputs, one input shape.

    Labels are made int64 and an empty ``x_unlabeled`` becomes ``None``, in ``t``.

    Raises:
        ValueError: Naming the split, what it must be and what it got.
    """
    if t["x_labeled"] is None or t["y_labeled"] is None:
        raise ValueError("x_labeled and y_labeled are required, got None")
    for split in ("labeled", "val", "test"):
        x, y = t[f"x_{split}"], t[f"y_{split}"]
        if (x is None) != (y is None):
            raise ValueError(f"x_{split} and y_{split} must be given together, got only one")
        if x is None or y is None:
            continue
        if y.ndim != 1 or y.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
            raise ValueError(
                f"y_{split} must be a 1-D integer tensor of class indices, "
                f"got dtype {y.dtype} and shape {tuple(y.shape)}"
            )
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"x_{split} and y_{split} must have the same number of rows, got {x.shape[0]} and {y.shape[0]}"
            )
        if y.numel() and int(y.min()) < 0:
            raise ValueError(
                f"y_{split} must hold class indices >= 0, got {int(y.min())} "
                "(unlabeled rows go in x_unlabeled, not in y with label -1)"
            )
        t[f"y_{split}"] = y.long()
    if t["x_labeled"].shape[0] == 0:
        raise ValueError("x_labeled must have at least one row, got 0")
    for split in ("labeled", "unlabeled", "val", "test"):
        x = t[f"x_{split}"]
        if x is not None and (x.is_floating_point() or x.is_complex()) and x.numel():
            bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
            if bool(bad.any()):
                raise ValueError(
                    f"x_{split} must be finite, got NaN or Inf in {int(bad.sum())} row(s), "
                    f"the first at row {int(bad.nonzero()[0, 0])}"
                )
    shape = tuple(t["x_labeled"].shape[1:])
    for split in ("unlabeled", "val", "test"):
        x = t[f"x_{split}"]
        if x is not None and tuple(x.shape[1:]) != shape:
            raise ValueError(f"x_{split} must have input shape {shape} like x_labeled, got {tuple(x.shape[1:])}")
    if t["x_unlabeled"] is not None and t["x_unlabeled"].shape[0] == 0:
        t["x_unlabeled"] = None


def check_dtypes(model: nn.Module, method: Method, t: Mapping[str, Tensor | None]) -> None:
    """Every split's inputs are checked here, before training: not at the first evaluation.

    Inputs a method perturbs (``x_labeled``, ``x_unlabeled``) must be floating point, and
    every floating-point split (``x_labeled``, ``x_unlabeled``, ``x_val``, ``x_test``) must
    have the model's parameter dtype.
    """
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    for split in ("labeled", "unlabeled", "val", "test"):
        name, x = f"x_{split}", t[f"x_{split}"]
        if x is None:
            continue
        if split in ("labeled", "unlabeled") and hasattr(method, "eps") and not x.is_floating_point():
            raise TypeError(
                f"{name} must be a floating-point tensor for method {method.name!r} (it perturbs the "
                f"inputs), got dtype {x.dtype}; for token ids, perturb the embeddings (torchvat.integrations.hf)"
            )
        if x.is_floating_point() and len(dtypes) == 1 and x.dtype not in dtypes:
            (dtype,) = dtypes
            raise TypeError(
                f"{name} has dtype {x.dtype} but the model's parameters are {dtype}; "
                f"convert the inputs ({name}.to({dtype})) or the model (model.to({x.dtype}))"
            )


def check_labels(clean: CleanPass, labels: Mapping[str, Tensor | None]) -> None:
    """After the first clean pass: the class indices in ``labels`` are below the number of outputs.

    Args:
        clean: The first clean pass (its labeled logits give the number of outputs).
        labels: ``y_labeled``, ``y_val``, ``y_test`` by name (``None`` where absent).

    Raises:
        ValueError: Naming the split, the valid range and the largest index.
    """
    logits = clean.labeled_logits
    if logits.ndim != 2:
        return
    n = int(logits.shape[1])
    for split in ("labeled", "val", "test"):
        y = labels.get(f"y_{split}")
        if y is None or y.is_floating_point() or y.numel() == 0:
            continue
        top = int(y.max())
        if top >= n:
            raise ValueError(f"y_{split} must hold class indices in [0, {n}) (the model returns {n} logits), got {top}")
