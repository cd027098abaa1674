"""The mathematics of torchvat: perturbation searches, divergences, losses and guards.

Imports torch only; nothing here knows about training loops, data or the command line.
"""

from torchvat.core.adversarial import AdversarialLoss, adversarial_loss, adversarial_perturbation
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
    l2_normalize,
    probe_scale,
    virtual_adversarial_perturbation,
)
from torchvat.core.search import projected_gradient_ascent
from torchvat.core.trades import TRADESLoss, trades_loss, trades_perturbation
from torchvat.core.vat import VATLoss, vat_loss

__all__ = [
    "LIKELIHOODS",
    "AdversarialLoss",
    "EntropyLoss",
    "RNGSnapshot",
    "TRADESLoss",
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
    "projected_gradient_ascent",
    "suggest_eps",
    "trades_loss",
    "trades_perturbation",
    "vat_loss",
    "virtual_adversarial_perturbation",
]
