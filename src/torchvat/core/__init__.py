"""The mathematics of torchvat: perturbation searches, divergences, losses and guards.

Imports torch only; nothing here knows about training loops, data or the command line.
"""

from torchvat.core.adversarial import AdversarialLoss, adversarial_loss
from torchvat.core.divergence import (
    LIKELIHOODS,
    bernoulli_kl,
    categorical_kl,
    fisher_product,
    gaussian_divergence,
)
from torchvat.core.entropy import EntropyLoss, entropy_loss
from torchvat.core.eps import suggest_eps
from torchvat.core.guards import RNGSnapshot, frozen_batchnorm_stats
from torchvat.core.perturbation import (
    TargetMismatchWarning,
    adversarial_perturbation,
    l2_normalize,
    probe_scale,
    virtual_adversarial_perturbation,
)
from torchvat.core.vat import VATLoss, vat_loss

__all__ = [
    "LIKELIHOODS",
    "AdversarialLoss",
    "EntropyLoss",
    "RNGSnapshot",
    "TargetMismatchWarning",
    "VATLoss",
    "adversarial_loss",
    "adversarial_perturbation",
    "bernoulli_kl",
    "categorical_kl",
    "entropy_loss",
    "fisher_product",
    "frozen_batchnorm_stats",
    "gaussian_divergence",
    "l2_normalize",
    "probe_scale",
    "suggest_eps",
    "vat_loss",
    "virtual_adversarial_perturbation",
]
