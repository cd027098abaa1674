"""Recipes: the papers' experiments as TOML files shipped inside the package.

Each recipe file holds a ``description``, its ``source`` (paper table and code the
hyperparameters come from), how to ``download`` the data, the ``[data]``, ``[model]`` and
``[train]`` sections of a ``torchvat train --config`` file, and ``[reported]``: the test
errors (in %) the papers report for that setting, by method.

- :func:`available_recipes`: the names.
- :func:`load_recipe`: one recipe as a :class:`Recipe`.
"""

from torchvat.recipes.loader import Recipe, available_recipes, load_recipe

__all__ = ["Recipe", "available_recipes", "load_recipe"]
