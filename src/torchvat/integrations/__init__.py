"""Integrations with other libraries: leaves of the package that nothing else in torchvat imports.

- :mod:`torchvat.integrations.hf`: VAT and adversarial training on the word embeddings of Hugging Face
  ``transformers`` models (:func:`~torchvat.integrations.hf.hf_vat_loss`,
  :func:`~torchvat.integrations.hf.hf_adversarial_loss`, ``VATTrainer``). Needs the ``[hf]`` extra;
  ``transformers`` is imported only when a function that needs it runs.

Import the submodules directly (``from torchvat.integrations.hf import hf_vat_loss``); this package
imports none of them, so ``import torchvat.integrations`` never needs a third-party library.
"""

__all__: list[str] = []
