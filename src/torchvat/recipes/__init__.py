"""Recipes: the papers' experiments as TOML files shipped inside the package.

Each recipe file holds a ``description``, its ``source`` (paper table and code the
hyperparameters come from), how to ``download`` the data, the ``[data]``, ``[model]`` and
``[train]`` sections of a ``torchvat train --config`` file, and ``[reported]``: the test
errors (in %) the papers report for that setting, by method.

- :func:`available_recipes`: the names.
- :func:`load_recipe`: one recipe as a :class:`Recipe`.
- :func:`compare_to_recipe`: a run's figure beside the recipe's, with the iterations done out of
  the recipe's and the settings changed from it (:func:`changed_settings`).
"""

from torchvat.recipes.compare import IGNORED_SETTINGS, RecipeComparison, changed_settings, compare_to_recipe
from torchvat.recipes.loader import Recipe, available_recipes, load_recipe

__all__ = [
    "IGNORED_SETTINGS",
    "Recipe",
    "RecipeComparison",
    "available_recipes",
    "changed_settings",
    "compare_to_recipe",
    "load_recipe",
]
