"""Optional dependencies: import one, or say which torchvat extra installs it.

``pip install torchvat`` brings torch and numpy only, which is all the losses need. The other parts
need an extra:

- ``torchvat[cli]``: the trainer's progress bar, the bundled and synthetic data sets, image
  folders, reports and figures, the ``torchvat`` command (tqdm, scikit-learn, matplotlib, Pillow);
- ``torchvat[sklearn]``: the scikit-learn estimators;
- ``torchvat[vision]``: MNIST, CIFAR-10 and SVHN through torchvision;
- ``torchvat[hf]``, ``torchvat[lightning]``, ``torchvat[tensorboard]``: the integrations;
- ``torchvat[all]``: everything.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: the distribution that provides each optional top-level module, for the message
_DISTRIBUTIONS = {
    "tqdm": "tqdm",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
    "PIL": "Pillow",
    "torchvision": "torchvision",
    "transformers": "transformers",
    "lightning": "lightning",
    "tensorboard": "tensorboard",
}


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra that installs it.

    A :class:`ModuleNotFoundError` (so an ``ImportError``), so code that already catches those
    still does.
    """


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` naming the extra that installs it.

    Args:
        module: The module to import (``"sklearn.datasets"``, ``"tqdm.auto"``, ...).
        extra: The torchvat extra that installs it (``"cli"``, ``"sklearn"``, ...).
        feature: What needs it, for the message (``"the progress bar"``).

    Returns:
        The imported module.

    Raises:
        MissingExtraError: If the module's top-level package is not installed.

    Example:
        >>> require("math", extra="cli", feature="an example").sqrt(4.0)
        2.0
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        top = module.split(".")[0]
        if error.name is not None and error.name.split(".")[0] != top:
            raise  # the module is there but something it imports is not: not ours to rename
        distribution = _DISTRIBUTIONS.get(top, top)
        raise MissingExtraError(
            f"{feature} needs {distribution}, which is not installed: pip install 'torchvat[{extra}]'",
            name=top,
        ) from error
