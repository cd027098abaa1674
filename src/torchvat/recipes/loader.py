"""Find and parse the TOML recipes shipped in :mod:`torchvat.recipes`."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

__all__ = ["Recipe", "available_recipes", "load_recipe"]

_SECTIONS = ("data", "model", "train")
_KEYS = {"description", "source", "reference", "notes", "download", "reported", *_SECTIONS}


@dataclass(frozen=True)
class Recipe:
    """One shipped experiment.

    Args:
        name: The recipe name (its file name without ``.toml``).
        description: One line on what it trains.
        source: Where the hyperparameters and reported errors come from.
        reference: The short citation of the ``reported`` figures (paper and table), shown beside
            a run's own figure.
        notes: The settings torchvat cannot yet express, named as deviations (empty when none).
        download: How to get the data (empty when none is needed).
        data: The ``[data]`` section of a run configuration.
        model: The ``[model]`` section.
        train: The ``[train]`` section (:class:`torchvat.train.TrainConfig` fields).
        reported: Test error in % reported by the papers, by method name.
    """

    name: str
    description: str
    source: str
    download: str
    reference: str = ""
    notes: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, float] = field(default_factory=dict)

    def config(self) -> dict[str, dict[str, Any]]:
        """The run configuration: the ``data``, ``model`` and ``train`` sections (copies).

        Returns:
            A dict of three dicts.
        """
        return {"data": dict(self.data), "model": dict(self.model), "train": dict(self.train)}


def _files() -> dict[str, Any]:
    root = resources.files("torchvat.recipes")
    return {f.name.removesuffix(".toml"): f for f in root.iterdir() if f.name.endswith(".toml")}


def available_recipes() -> list[str]:
    """Names of the shipped recipes, sorted.

    Returns:
        The names :func:`load_recipe` accepts.

    Example:
        >>> "mnist-100" in available_recipes() and "moons" in available_recipes()
        True
    """
    return sorted(_files())


def load_recipe(name: str) -> Recipe:
    """Load a shipped recipe by name.

    Args:
        name: One of :func:`available_recipes`.

    Returns:
        The recipe.

    Raises:
        ValueError: If the name is unknown (the message lists the known ones) or the file
            has unknown keys.

    Example:
        >>> r = load_recipe("cifar10-4000")
        >>> r.data["preprocess"], r.model["name"], r.train["eps"], r.reported["vat"]
        ('zca', 'conv-large', 8.0, 11.36)
    """
    files = _files()
    if not isinstance(name, str) or name not in files:
        raise ValueError(f"recipe must be one of {sorted(files)}, got {name!r}")
    values = tomllib.loads(files[name].read_text(encoding="utf-8"))
    unknown = sorted(set(values) - _KEYS)
    if unknown:
        raise ValueError(f"recipe {name!r} has unknown keys {unknown}; expected some of {sorted(_KEYS)}")
    return Recipe(
        name=name,
        description=str(values.get("description", "")),
        source=str(values.get("source", "")),
        download=str(values.get("download", "")),
        reference=str(values.get("reference", "")),
        notes=str(values.get("notes", "")),
        data=dict(values.get("data", {})),
        model=dict(values.get("model", {})),
        train=dict(values.get("train", {})),
        reported={k: float(v) for k, v in values.get("reported", {}).items()},
    )
