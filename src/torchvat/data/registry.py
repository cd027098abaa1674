"""One entry point that loads any known dataset by name."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from torchvat.data.container import SemiSupervisedData
from torchvat.data.digits import load_digits_data
from torchvat.data.fashion_mnist import find_fashion_mnist, load_fashion_mnist
from torchvat.data.synthetic import make_circles_data, make_moons_data
from torchvat.data.torchvision_sets import DEFAULT_N_LABELS, load_torchvision

__all__ = [
    "available_datasets",
    "canonical_dataset_name",
    "dataset_options",
    "dataset_options_function",
    "load_dataset",
]


def _moons(root: Any, n_labels: int | None, seed: int, download: bool, **kw: Any) -> Any:
    return make_moons_data(8 if n_labels is None else n_labels, seed=seed, **kw)


def _circles(root: Any, n_labels: int | None, seed: int, download: bool, **kw: Any) -> Any:
    return make_circles_data(8 if n_labels is None else n_labels, seed=seed, **kw)


def _digits(root: Any, n_labels: int | None, seed: int, download: bool, **kw: Any) -> Any:
    return load_digits_data(100 if n_labels is None else n_labels, seed=seed, **kw)


def _fashion(root: Any, n_labels: int | None, seed: int, download: bool, **kw: Any) -> Any:
    n = DEFAULT_N_LABELS["fashion-mnist"] if n_labels is None else n_labels
    if not download:
        try:
            directory = find_fashion_mnist(root)
        except FileNotFoundError:
            if root is None:
                raise
        else:
            return load_fashion_mnist(directory, n, seed=seed, **kw)
    return load_torchvision("fashion-mnist", root, download=download, n_labels=n, seed=seed, **kw)


def _vision(name: str) -> Callable[..., Any]:
    def load(root: Any, n_labels: int | None, seed: int, download: bool, **kw: Any) -> Any:
        return load_torchvision(name, root, download=download, n_labels=n_labels, seed=seed, **kw)

    return load


_LOADERS: dict[str, Callable[..., SemiSupervisedData]] = {
    "moons": _moons,
    "circles": _circles,
    "digits": _digits,
    "mnist": _vision("mnist"),
    "fashion-mnist": _fashion,
    "cifar10": _vision("cifar10"),
    "svhn": _vision("svhn"),
}
_ALIASES = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "two-moons": "moons"}
#: the function whose keyword options each dataset takes (besides n_labels, seed, root, download);
#: the torchvision sets: load_torchvision
_OPTIONS_OF: dict[str, Callable[..., Any]] = {
    "moons": make_moons_data,
    "circles": make_circles_data,
    "digits": load_digits_data,
    "fashion-mnist": load_fashion_mnist,
}


def canonical_dataset_name(name: str) -> str:
    """The name :func:`load_dataset` knows dataset ``name`` by: case, ``_``/``-`` and aliases ignored.

    Args:
        name: A dataset name, e.g. ``"Two_Moons"``.

    Returns:
        Its name in :func:`available_datasets`.

    Raises:
        ValueError: If ``name`` is unknown (the message lists the known names).

    Example:
        >>> canonical_dataset_name("Two_Moons"), canonical_dataset_name("CIFAR-10")
        ('moons', 'cifar10')
    """
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _LOADERS:
        raise ValueError(f"name must be one of {available_datasets()}, got {name!r}")
    return key


def dataset_options_function(name: str) -> Callable[..., Any]:
    """The function that receives the keyword options :func:`load_dataset` passes on to dataset ``name``.

    Its parameters besides ``n_labels``, ``seed``, ``root``, ``download``, ``name`` and
    ``directory`` are :func:`dataset_options`; their type hints say what each takes.

    Args:
        name: A dataset name (as :func:`canonical_dataset_name` reads it).

    Returns:
        The function.

    Raises:
        ValueError: If ``name`` is unknown.

    Example:
        >>> dataset_options_function("two-moons").__name__
        'make_moons_data'
    """
    return _OPTIONS_OF.get(canonical_dataset_name(name), load_torchvision)


def dataset_options(name: str) -> list[str]:
    """The keyword options :func:`load_dataset` passes on to dataset ``name``'s loader.

    Example:
        >>> dataset_options("moons")
        ['n_samples', 'noise', 'n_test', 'unlabeled_includes_labeled']
    """
    skip = {"n_labels", "seed", "root", "download", "name", "directory"}
    return [p for p in inspect.signature(dataset_options_function(name)).parameters if p not in skip]


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`.

    Returns:
        The dataset names.

    Example:
        >>> available_datasets()
        ['moons', 'circles', 'digits', 'mnist', 'fashion-mnist', 'cifar10', 'svhn']
    """
    return list(_LOADERS)


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    n_labels: int | None = None,
    seed: int = 0,
    download: bool = False,
    **kwargs: Any,
) -> SemiSupervisedData:
    """Load a semi-supervised benchmark by name.

    ``"moons"``, ``"circles"`` and ``"digits"`` need no files. ``"fashion-mnist"`` reads
    the IDX files directly (``root``, ``$TORCHVAT_DATA`` or Debian's
    ``dataset-fashion-mnist`` package) and falls back to torchvision's layout under
    ``root``. ``"mnist"``, ``"cifar10"`` and ``"svhn"`` go through torchvision.

    Args:
        name: One of :func:`available_datasets` (case and ``_``/``-`` are ignored).
        root: Directory of the files (file-based datasets only).
        n_labels: Number of labeled examples; ``None`` uses the papers' setting
            (8 for the synthetic sets, 100 for digits and (Fashion-)MNIST, 4000 for
            CIFAR-10, 1000 for SVHN).
        seed: Seed of the label selection (and of the draw for synthetic sets).
        download: Let torchvision download missing files.
        **kwargs: Passed to the dataset's loader, e.g. ``n_val``, ``flatten``,
            ``unlabeled_includes_labeled``.

    Returns:
        The semi-supervised problem.

    Raises:
        ValueError: If ``name`` is unknown (the message lists the known names).

    Example:
        >>> data = load_dataset("moons", n_labels=4, n_samples=100)
        >>> data.name, data.n_labeled
        ('moons', 4)
    """
    key = canonical_dataset_name(name)
    unknown = sorted(set(kwargs) - set(dataset_options(key)))
    if unknown:
        raise ValueError(f"dataset {key!r} takes the options {dataset_options(key)}, got {unknown} besides")
    return _LOADERS[key](root, n_labels, seed, download, **kwargs)
