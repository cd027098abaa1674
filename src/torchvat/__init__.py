"""torchvat: virtual adversarial training as a correct, fast, drop-in regularizer for PyTorch.

The public API re-exports the mathematics of :mod:`torchvat.core`: the VAT loss (local
distributional smoothness), adversarial training (Goodfellow et al. 2015; PGD, Madry et al. 2018),
TRADES (Zhang et al. 2019), conditional entropy
minimization, the perturbation searches themselves, and the guards that keep a model untouched by
perturbed passes.
"""

from torchvat.core import (
    AdversarialLoss,
    EntropyLoss,
    RNGSnapshot,
    TRADESLoss,
    VATLoss,
    adversarial_loss,
    adversarial_perturbation,
    entropy_loss,
    frozen_batchnorm_stats,
    projected_gradient_ascent,
    suggest_eps,
    trades_loss,
    trades_perturbation,
    vat_loss,
    virtual_adversarial_perturbation,
)

__version__ = "0.1.0"

__all__ = [
    "AdversarialLoss",
    "EntropyLoss",
    "RNGSnapshot",
    "TRADESLoss",
    "VATLoss",
    "__version__",
    "adversarial_loss",
    "adversarial_perturbation",
    "entropy_loss",
    "frozen_batchnorm_stats",
    "projected_gradient_ascent",
    "suggest_eps",
    "trades_loss",
    "trades_perturbation",
    "vat_loss",
    "virtual_adversarial_perturbation",
]
