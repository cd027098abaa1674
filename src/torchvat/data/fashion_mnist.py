"""Fashion-MNIST read straight from the standard IDX files, without torchvision."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from torchvat.data.container import SemiSupervisedData
from torchvat.data.idx import read_idx
from torchvat.data.paths import DATA_ENV_VAR
from torchvat.data.splits import semi_supervised_split

__all__ = [
    "DEBIAN_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "load_idx_directory",
]

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the IDX files."""

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _file_in(directory: Path, stem: str) -> Path | None:
    """The gzipped or plain file ``stem`` in ``directory``, if present."""
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _has_idx_files(directory: Path) -> bool:
    return all(_file_in(directory, stem) is not None for stem in _FILES.values())


def _candidates(directory: Path) -> list[Path]:
    """The directory itself and the usual sub-directories that hold the IDX files."""
    return [
        directory,
        directory / "fashion-mnist",
        directory / "FashionMNIST" / "raw",
    ]


def find_fashion_mnist(root: str | os.PathLike[str] | None = None) -> Path:
    """Locate a directory holding the four Fashion-MNIST IDX files.

    The search order is: ``root`` when given (and only it), then the directory in the
    ``TORCHVAT_DATA`` environment variable, then Debian's package location
    ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``), then
    ``~/.cache/torchvat/data``, where a torchvision download goes without ``TORCHVAT_DATA``.
    In each place the directory itself, ``fashion-mnist/`` and torchvision's
    ``FashionMNIST/raw/`` are tried.

    Args:
        root: Explicit directory, or ``None`` to search the defaults.

    Returns:
        The directory containing the files (gzipped or not).

    Raises:
        FileNotFoundError: If no candidate holds all four files; the message lists the
            paths searched.
    """
    if root is not None:
        places = [Path(root).expanduser()]
    else:
        places = []
        env = os.environ.get(DATA_ENV_VAR)
        if env:
            places.append(Path(env).expanduser())
        places.append(DEBIAN_FASHION_MNIST_DIR)
        places.append(Path("~/.cache/torchvat/data").expanduser())  # where download=True puts them by default
    searched: list[Path] = []
    for place in places:
        for cand in _candidates(place):
            searched.append(cand)
            if _has_idx_files(cand):
                return cand
    names = ", ".join(f"{s}.gz" for s in _FILES.values())
    raise FileNotFoundError(
        f"Fashion-MNIST files ({names}; gzipped or not) not found in any of: "
        f"{', '.join(str(s) for s in searched)}. Pass root=, set ${DATA_ENV_VAR}, "
        "or install Debian's package: apt-get install dataset-fashion-mnist"
    )


def load_idx_directory(directory: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read the four (Fashion-)MNIST IDX files of one directory.

    Args:
        directory: Directory with ``train-images-idx3-ubyte[.gz]``,
            ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]`` and
            ``t10k-labels-idx1-ubyte[.gz]``.

    Returns:
        Dict with ``x_train``, ``y_train``, ``x_test``, ``y_test`` numpy arrays.

    Raises:
        FileNotFoundError: If a file is missing (the message names it).
        ValueError: If image and label counts disagree.
    """
    directory = Path(directory)
    out = {}
    for key, stem in _FILES.items():
        path = _file_in(directory, stem)
        if path is None:
            raise FileNotFoundError(f"missing IDX file: {directory / stem}[.gz]")
        out[key] = read_idx(path)
    for split in ("train", "test"):
        x, y = out[f"x_{split}"], out[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"{directory}: {split} images must be [N, H, W] and labels [N], got {x.shape} and {y.shape}"
            )
    return out


def _images_to_tensor(images: np.ndarray, flatten: bool) -> Tensor:
    """uint8 ``[N, H, W]`` -> float32 in [0, 1], ``[N, 1, H, W]`` or ``[N, H*W]``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    return x.reshape(x.shape[0], -1) if flatten else x.unsqueeze(1)


def load_fashion_mnist(
    root: str | os.PathLike[str] | None = None,
    n_labels: int | None = 100,
    *,
    n_val: int = 0,
    seed: int = 0,
    flatten: bool = False,
    balanced: bool = True,
    unlabeled_includes_labeled: bool = True,
) -> SemiSupervisedData:
    """Load Fashion-MNIST from its IDX files as a semi-supervised problem.

    Pixels are scaled to ``[0, 1]``; inputs have shape ``[1, 28, 28]`` (or ``[784]`` with
    ``flatten=True``). The 60000 training images form the pool from which ``n_val``
    validation and ``n_labels`` class-balanced labeled examples are drawn; the 10000
    test images are the test set.

    Args:
        root: Directory with the IDX files; see :func:`find_fashion_mnist` for the search
            when ``None``.
        n_labels: Number of labeled examples (``None``: all labels kept).
        n_val: Validation examples held out from the training pool.
        seed: Seed of the validation and label selection.
        flatten: Return flat ``[784]`` inputs.
        balanced: Select the same number of labels per class.
        unlabeled_includes_labeled: Whether the unlabeled set holds the labeled inputs.

    Returns:
        The semi-supervised problem, with the ten class names.

    Raises:
        FileNotFoundError: If the files cannot be found.
    """
    arrays = load_idx_directory(find_fashion_mnist(root))
    return semi_supervised_split(
        _images_to_tensor(arrays["x_train"], flatten),
        torch.from_numpy(arrays["y_train"].astype(np.int64)),
        n_labels=n_labels,
        n_classes=10,
        x_test=_images_to_tensor(arrays["x_test"], flatten),
        y_test=torch.from_numpy(arrays["y_test"].astype(np.int64)),
        n_val=n_val,
        balanced=balanced,
        seed=seed,
        unlabeled_includes_labeled=unlabeled_includes_labeled,
        name="fashion-mnist",
        classes=FASHION_MNIST_CLASSES,
    )
