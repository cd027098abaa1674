"""MNIST, Fashion-MNIST, CIFAR-10 and SVHN through torchvision (the ``[vision]`` extra)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from torchvat.data.container import SemiSupervisedData
from torchvat.data.fashion_mnist import FASHION_MNIST_CLASSES
from torchvat.data.paths import default_data_root
from torchvat.data.splits import semi_supervised_split

__all__ = ["DEFAULT_N_LABELS", "TORCHVISION_DATASETS", "load_torchvision"]

TORCHVISION_DATASETS = ("mnist", "fashion-mnist", "cifar10", "svhn")
"""Dataset names :func:`load_torchvision` understands."""

DEFAULT_N_LABELS = {"mnist": 100, "fashion-mnist": 100, "cifar10": 4000, "svhn": 1000}
"""Number of labels of the VAT papers' semi-supervised benchmarks."""

_LAYOUT = {
    "mnist": "{root}/MNIST/raw/ (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, un-gzipped)",
    "fashion-mnist": "{root}/FashionMNIST/raw/ (train-images-idx3-ubyte, "
    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, un-gzipped)",
    "cifar10": "{root}/cifar-10-batches-py/ (the extracted cifar-10-python.tar.gz)",
    "svhn": "{root}/train_32x32.mat and {root}/test_32x32.mat (and extra_32x32.mat)",
}


def _import_datasets() -> Any:
    try:
        from torchvision import datasets
    except ImportError as err:  # pragma: no cover - torchvision is installed in dev
        raise ImportError("load_torchvision needs torchvision: pip install torchvat[vision]") from err
    return datasets


def _images(data: Any, channels_last: bool, flatten: bool) -> Tensor:
    """uint8 images -> float32 in [0, 1], ``[N, C, H, W]`` (or flat)."""
    x = data if isinstance(data, Tensor) else torch.from_numpy(np.asarray(data))
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif channels_last:
        x = x.permute(0, 3, 1, 2)
    x = x.contiguous().to(torch.float32).div_(255.0)
    return x.reshape(x.shape[0], -1) if flatten else x


def _labels(values: Any) -> Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.int64)


def load_torchvision(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    n_labels: int | None = None,
    n_val: int = 0,
    seed: int = 0,
    flatten: bool = False,
    svhn_extra: bool = False,
    balanced: bool = True,
    unlabeled_includes_labeled: bool = True,
) -> SemiSupervisedData:
    """Load a torchvision image dataset as a semi-supervised problem.

    Pixels are scaled to ``[0, 1]``, images are ``[C, H, W]``. The training split is the
    pool for the validation and labeled examples; the test split is the test set. SVHN
    uses the ``train`` split, with labels 0-9 as torchvision gives them (digit 0 is
    class 0); ``svhn_extra=True`` appends the 531131 ``extra`` images to the unlabeled
    set (their labels are dropped).

    Args:
        name: One of ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, ``"svhn"``.
        root: Dataset directory as torchvision lays it out; defaults to
            :func:`~torchvat.data.paths.default_data_root`.
        download: Let torchvision download missing files.
        n_labels: Number of labeled examples; ``None`` uses the papers' setting
            (:data:`DEFAULT_N_LABELS`).
        n_val: Validation examples held out from the training pool.
        seed: Seed of the validation and label selection.
        flatten: Return flat inputs.
        svhn_extra: For SVHN, add the ``extra`` split to the unlabeled data.
        balanced: Select the same number of labels per class.
        unlabeled_includes_labeled: Whether the unlabeled set holds the labeled inputs.

    Returns:
        The semi-supervised problem.

    Raises:
        ValueError: If ``name`` is unknown.
        ImportError: If torchvision is not installed.
        FileNotFoundError: If the files are missing and ``download=False``.
    """
    key = name.lower().replace("_", "-")
    if key not in TORCHVISION_DATASETS:
        raise ValueError(f"name must be one of {list(TORCHVISION_DATASETS)}, got {name!r}")
    datasets = _import_datasets()
    root_path = Path(root).expanduser() if root is not None else default_data_root()
    if n_labels is None:
        n_labels = DEFAULT_N_LABELS[key]

    def missing(err: Exception | None) -> FileNotFoundError:
        where = _LAYOUT[key].format(root=root_path)
        cause = f" ({err})" if err is not None else ""
        return FileNotFoundError(
            f"{key} not found under {root_path}{cause}: pass download=True to fetch it, or put the files at {where}"
        )

    if not download and not root_path.is_dir():
        raise missing(None)

    def build(cls: Any, **kwargs: Any) -> Any:
        try:
            return cls(str(root_path), download=download, **kwargs)
        except RuntimeError as err:
            if download:
                raise
            raise missing(err) from err

    extra = None
    if key in ("mnist", "fashion-mnist"):
        cls = datasets.MNIST if key == "mnist" else datasets.FashionMNIST
        train, test = build(cls, train=True), build(cls, train=False)
        x, y = _images(train.data, False, flatten), _labels(train.targets)
        x_test, y_test = _images(test.data, False, flatten), _labels(test.targets)
        classes = FASHION_MNIST_CLASSES if key == "fashion-mnist" else list(train.classes)
    elif key == "cifar10":
        train, test = build(datasets.CIFAR10, train=True), build(datasets.CIFAR10, train=False)
        x, y = _images(train.data, True, flatten), _labels(train.targets)
        x_test, y_test = _images(test.data, True, flatten), _labels(test.targets)
        classes = list(train.classes)
    else:
        train, test = build(datasets.SVHN, split="train"), build(datasets.SVHN, split="test")
        x, y = _images(train.data, False, flatten), _labels(train.labels)
        x_test, y_test = _images(test.data, False, flatten), _labels(test.labels)
        classes = [str(d) for d in range(10)]
        if svhn_extra:
            extra = _images(build(datasets.SVHN, split="extra").data, False, flatten)
    data = semi_supervised_split(
        x,
        y,
        n_labels=n_labels,
        n_classes=10,
        x_test=x_test,
        y_test=y_test,
        n_val=n_val,
        balanced=balanced,
        seed=seed,
        unlabeled_includes_labeled=unlabeled_includes_labeled,
        name=key,
        classes=classes,
    )
    if extra is not None:
        data.x_unlabeled = torch.cat([data.x_unlabeled, extra])
    return data
