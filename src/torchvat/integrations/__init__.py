"""Integrations with other libraries: leaves of the package that nothing else in torchvat imports.

- :mod:`torchvat.integrations.hf`: VAT and adversarial training on the word embeddings of Hugging Face
  ``transformers`` models (:func:`~torchvat.integrations.hf.hf_vat_loss`,
  :func:`~torchvat.integrations.hf.hf_adversarial_loss`,
  :class:`~torchvat.integrations.hf.VATTrainer` with :class:`~torchvat.integrations.hf.VATArguments`).
  Needs the ``[hf]`` extra.
- :mod:`torchvat.integrations.lightning`: :class:`~torchvat.integrations.lightning.VATModule`, a
  ``lightning.LightningModule`` whose ``training_step`` is the engine's. Needs the ``[lightning]``
  extra.

Each class is defined at module level in the module that imports its framework at the top
(:mod:`torchvat.integrations.hf.trainer`, :mod:`torchvat.integrations.lightning`). This package
re-exports the names below on first access (``from torchvat.integrations import VATTrainer``), so
``import torchvat`` and ``import torchvat.integrations`` never import ``transformers`` or
``lightning``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and the API reference; at run time __getattr__ imports them on first access
    from torchvat.integrations.hf import (
        VATArguments,
        VATTrainer,
        hf_adversarial_loss,
        hf_vat_loss,
        hf_virtual_adversarial_perturbation,
    )
    from torchvat.integrations.lightning import VATModule, vat_module

#: each lazily re-exported name and the module defining it
_EXPORTS = {
    "VATArguments": "torchvat.integrations.hf",
    "VATTrainer": "torchvat.integrations.hf",
    "hf_adversarial_loss": "torchvat.integrations.hf",
    "hf_vat_loss": "torchvat.integrations.hf",
    "hf_virtual_adversarial_perturbation": "torchvat.integrations.hf",
    "VATModule": "torchvat.integrations.lightning",
    "vat_module": "torchvat.integrations.lightning",
}

__all__ = [
    "VATArguments",
    "VATModule",
    "VATTrainer",
    "hf_adversarial_loss",
    "hf_vat_loss",
    "hf_virtual_adversarial_perturbation",
    "vat_module",
]


def __getattr__(name: str) -> Any:
    """Import a re-exported name from its module on first access (which may import its framework)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
