"""How close a run came to its recipe: its own figure beside the reported one, the iterations, the changes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torchvat.recipes.loader import Recipe

__all__ = ["IGNORED_SETTINGS", "RecipeComparison", "changed_settings", "compare_to_recipe"]

#: settings that say where and how a run is shown or stored, not what it computes; ``iterations``
#: is compared on its own (a shortened run)
IGNORED_SETTINGS = {
    "data": frozenset({"root", "download", "seed"}),
    "train": frozenset(
        {
            "iterations",
            "eval_every",
            "eval_batch_size",
            "log_every",
            "checkpoint_every",
            "collapse_patience",
            "nonfinite",
            "catch_signals",
            "seed",
            "device",
            "compile",
            "channels_last",
            "out_dir",
            "progress",
            "tensorboard",
            "sync_batchnorm",
        }
    ),
}


def _show(value: Any) -> str:
    return "unset" if value is None else str(value)


def _section(config: Any, name: str) -> dict[str, Any]:
    """One section of a run configuration as a dict (a dataclass or a mapping)."""
    part = config[name] if isinstance(config, Mapping) else getattr(config, name)
    if dataclasses.is_dataclass(part) and not isinstance(part, type):
        return dataclasses.asdict(part)
    return dict(part)


def changed_settings(recipe_config: Any, run_config: Any, *, eps_derived_earlier: bool = False) -> list[str]:
    """The settings that matter where a run differs from its recipe, as ``"name old -> new"``.

    Both configurations are complete (defaults filled in): :class:`torchvat.runs.RunConfig`
    objects or their :meth:`~torchvat.runs.RunConfig.to_dict` form. Settings of
    :data:`IGNORED_SETTINGS` and the number of iterations are not compared. Options
    (``[data] options``, ``[model] kwargs``, ``[train] extra``) are compared key by key.

    Args:
        recipe_config: The recipe's configuration.
        run_config: The run's.
        eps_derived_earlier: The run resumes one whose eps was derived from the data (its
            ``config.toml`` holds the number): an eps the recipe leaves to the data is not a change.

    Returns:
        The changes, in section order (data, model, train).

    Example:
        >>> a = {"data": {"n_labels": 100}, "model": {"name": "mlp", "kwargs": {}}, "train": {"eps": 5.0}}
        >>> b = {"data": {"n_labels": 20}, "model": {"name": "mlp", "kwargs": {}}, "train": {"eps": 2.0}}
        >>> changed_settings(a, b)
        ['n_labels 100 -> 20', 'eps 5.0 -> 2.0']
    """
    changes: list[str] = []
    for name in ("data", "model", "train"):
        before, after = _section(recipe_config, name), _section(run_config, name)
        ignored = IGNORED_SETTINGS.get(name, frozenset())
        for key in list(dict.fromkeys([*before, *after])):
            if key in ignored:
                continue
            a, b = before.get(key), after.get(key)
            if key in ("options", "kwargs", "extra"):
                label = {"options": "data option", "kwargs": "model option", "extra": "train option"}[key]
                a, b = dict(a or {}), dict(b or {})
                for sub in dict.fromkeys([*a, *b]):
                    if a.get(sub) != b.get(sub):
                        changes.append(f"{label} {sub} {_show(a.get(sub))} -> {_show(b.get(sub))}")
                continue
            if name == "data" and key == "dataset" and a is not None and b is not None:
                from torchvat.data.registry import canonical_dataset_name

                if canonical_dataset_name(str(a)) == canonical_dataset_name(str(b)):
                    continue
            if key == "eps" and a is None and eps_derived_earlier:
                continue
            if a != b:
                shown = "model" if name == "model" and key == "name" else key
                changes.append(f"{shown} {_show(a)} -> {_show(b)}")
    return changes


@dataclass(frozen=True)
class RecipeComparison:
    """A run's figure beside its recipe's.

    Args:
        recipe: The recipe.
        method: The run's method.
        steps: Iterations the run has trained (a resumed run: in all).
        test_error: The run's final test error in % (``None``: no test split was evaluated).
        changes: The settings that differ from the recipe's (:func:`changed_settings`).
    """

    recipe: Recipe
    method: str
    steps: int
    test_error: float | None
    changes: list[str] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        """The recipe's number of iterations."""
        return int(self.recipe.train.get("iterations", 0))

    @property
    def reported(self) -> float | None:
        """The recipe's reported test error (%) for the run's method, if any."""
        return self.recipe.reported.get(self.method)

    @property
    def shortened(self) -> bool:
        """Whether the run trained fewer iterations than the recipe."""
        return self.steps < self.iterations

    @property
    def reproduces(self) -> bool:
        """Whether the run is the recipe as written: its full length, no setting changed."""
        return not self.shortened and not self.changes

    def sentence(self) -> str:
        """The run's figure, the iterations out of the recipe's, the reported figure and the changes.

        Returns:
            One line, e.g. ``test error 2.31% after 5,000 of 48,000 iterations (a shortened run;
            the recipe's reported figure: 1.36%, Miyato et al., TPAMI 2018, Table 3)``.
        """
        own = (
            "no test error (no test split evaluated)"
            if self.test_error is None
            else f"test error {self.test_error:.2f}%"
        )
        total = self.iterations
        if self.steps < total:
            length = f"after {self.steps:,} of {total:,} iterations (a shortened run; "
        elif self.steps == total:
            length = f"after {self.steps:,} of {total:,} iterations (the recipe's full length; "
        else:
            length = f"after {self.steps:,} iterations, more than the recipe's {total:,} ("
        if self.reported is not None:
            cite = f", {self.recipe.reference}" if self.recipe.reference else ""
            figure = f"the recipe's reported figure: {self.reported:.2f}%{cite})"
        elif self.recipe.reported:
            listed = ", ".join(f"{k} {v:.2f}%" for k, v in self.recipe.reported.items())
            figure = f"the recipe reports no figure for method {self.method}; it reports {listed})"
        else:
            figure = "the recipe has no reported figure)"
        changed = f"; settings changed from the recipe: {', '.join(self.changes)}" if self.changes else ""
        return f"{own} {length}{figure}{changed}"


def compare_to_recipe(
    recipe: Recipe,
    run_config: Any,
    *,
    steps: int,
    test_error: float | None,
    eps_derived_earlier: bool = False,
) -> RecipeComparison:
    """Compare a finished run with the recipe it came from.

    Args:
        recipe: The recipe.
        run_config: The run's configuration as given (a :class:`torchvat.runs.RunConfig`, before
            the run derived eps from the data).
        steps: Iterations trained.
        test_error: The final test error in % (``None`` when none was evaluated).
        eps_derived_earlier: See :func:`changed_settings`.

    Returns:
        The comparison.
    """
    from torchvat.runs.config import RunConfig

    recipe_config = RunConfig.from_dict(recipe.config(), where=f"recipe {recipe.name}")
    changes = changed_settings(recipe_config, run_config, eps_derived_earlier=eps_derived_earlier)
    method = str(_section(run_config, "train").get("method", "vat"))
    return RecipeComparison(recipe=recipe, method=method, steps=steps, test_error=test_error, changes=changes)
