"""The networks of the VAT papers and a factory that builds them by name.

- :class:`MLP`: the MNIST MLP (1200-600-300-150) of Miyato et al. and small variants.
- :class:`ConvSmall`, :class:`ConvLarge`: conv-small and conv-large of the VAT paper.
- :class:`WideResNet`, :func:`wrn28_2`: WRN-28-2 of Oliver et al. 2018.
- :class:`TrimmedBatchNorm1d`: BatchNorm whose batch statistics leave out far values (``MLP(bn_trim=5)``).
- :func:`build_model`, :func:`default_model`, :func:`available_models`: build by name.
"""

from torchvat.models.conv import ConvLarge, ConvSmall
from torchvat.models.factory import (
    available_models,
    build_model,
    default_model,
    default_model_name,
    scaled_hidden_sizes,
)
from torchvat.models.mlp import MLP, MNIST_HIDDEN_SIZES, SMALL_HIDDEN_SIZES
from torchvat.models.norm import TrimmedBatchNorm1d
from torchvat.models.wrn import WideBasicBlock, WideResNet, wrn28_2

__all__ = [
    "MLP",
    "MNIST_HIDDEN_SIZES",
    "SMALL_HIDDEN_SIZES",
    "ConvLarge",
    "ConvSmall",
    "TrimmedBatchNorm1d",
    "WideBasicBlock",
    "WideResNet",
    "available_models",
    "build_model",
    "default_model",
    "default_model_name",
    "scaled_hidden_sizes",
    "wrn28_2",
]
