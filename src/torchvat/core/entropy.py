r"""Conditional entropy minimization (Grandvalet & Bengio 2005), used with VAT as VAT+EntMin."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchvat.core._checks import (
    CLASS_DIM_HINT,
    REDUCTIONS,
    OutputLayout,
    Reduction,
    check_choice,
    check_class_dim,
    reduce,
)

__all__ = ["EntropyLoss", "entropy_loss"]

_ENTROPY_LIKELIHOODS = ("categorical", "bernoulli")


def entropy_loss(
    logits: Tensor,
    *,
    likelihood: str = "categorical",
    class_dim: int = 1,
    output_mask: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Conditional entropy of the prediction, :math:`H(y \mid x) = -\sum_k p_k \log p_k`.

    Minimizing it on unlabeled data pushes decision boundaries away from the data; Miyato et al.
    (TPAMI 2018) add it to VAT ("VAT+EntMin"). Unlike the VAT target, the gradient flows through
    :math:`p`.

    Args:
        logits: [B, C, *] for ``"categorical"`` (softmax over dim 1; [B, *, C] with
            ``class_dim=-1``), [B, *] for ``"bernoulli"`` (a binary classifier's [B] output included).
        likelihood: ``"categorical"`` or ``"bernoulli"`` (sum of per-output binary entropies).
        class_dim: the class dimension of ``logits``: 1 (default) or -1 for [B, T, C] token
            classification; see :func:`torchvat.vat_loss`.
        output_mask: 1 where a position counts, of ``logits``' shape without its class dimension
            ([B, T] for [B, T, C]); left-out positions (padded tokens) contribute nothing.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"`` over the batch.

    Shape:
        output: [] for ``"mean"``/``"sum"``, [B] for ``"none"`` (summed over non-batch dimensions).

    Raises:
        TypeError: if ``logits`` is not a floating-point tensor.
        ValueError: if ``logits`` has fewer dimensions than the likelihood's layout, a categorical
            class dimension of size 1 (softmax over one class is 1: the entropy would always be 0),
            or an empty batch (as :func:`torchvat.vat_loss`).

    Example:
        >>> round(entropy_loss(torch.zeros(1, 4)).item(), 4)  # log 4
        1.3863

    References:
        Y. Grandvalet, Y. Bengio. Semi-supervised Learning by Entropy Minimization. NeurIPS 2004.
    """
    check_choice("likelihood", likelihood, _ENTROPY_LIKELIHOODS)
    check_choice("reduction", reduction, REDUCTIONS)
    output_layout = OutputLayout(class_dim, output_mask, zero_masked=False)
    categorical = likelihood == "categorical"
    layout = "[B, C, ...]" if categorical else "[B, ...]"
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        got = (
            f"{logits.dtype} tensor of shape {tuple(logits.shape)}"
            if isinstance(logits, Tensor)
            else type(logits).__name__
        )
        raise TypeError(f"logits must be a floating-point tensor of shape {layout}, got {got}")
    if categorical and class_dim != 1:
        layout = f"[B, ...] with C >= 2 classes in dimension {class_dim}"
    if logits.ndim < (2 if categorical else 1):
        raise ValueError(
            f"logits must have shape {layout} for likelihood={likelihood!r}, got shape {tuple(logits.shape)}"
            f"{CLASS_DIM_HINT if categorical and class_dim == 1 else ''}"
        )
    z = output_layout.canonical(logits)
    if categorical and z.shape[1] < 2:
        raise ValueError(
            f"logits must have shape {layout} for likelihood={likelihood!r}, got shape {tuple(logits.shape)}"
            f"{CLASS_DIM_HINT if class_dim == 1 else ''}"
        )
    if logits.shape[0] == 0:
        raise ValueError(f"logits must have a non-empty batch dimension, got shape {tuple(logits.shape)}")
    z = z.to(torch.promote_types(logits.dtype, torch.float32))
    if categorical:
        logp = F.log_softmax(z, dim=1)
        h = -(logp.exp() * logp)
    else:
        p = torch.sigmoid(z)
        h = -(p * F.logsigmoid(z) + (1 - p) * F.logsigmoid(-z))
    m = output_layout.mask_for(h)
    if m is not None:
        h = torch.where(m, h, h.new_zeros(()))
    return reduce(h.reshape(h.shape[0], -1).sum(1), reduction)


class EntropyLoss(nn.Module):
    """Module twin of :func:`entropy_loss`.

    Example:
        >>> EntropyLoss(reduction="none")(torch.zeros(2, 2)).shape
        torch.Size([2])
    """

    def __init__(self, *, likelihood: str = "categorical", class_dim: int = 1, reduction: Reduction = "mean") -> None:
        super().__init__()
        check_choice("likelihood", likelihood, _ENTROPY_LIKELIHOODS)
        check_class_dim(class_dim)
        check_choice("reduction", reduction, REDUCTIONS)
        self.likelihood, self.class_dim, self.reduction = likelihood, class_dim, reduction

    def forward(self, logits: Tensor, *, output_mask: Tensor | None = None) -> Tensor:
        """Compute :func:`entropy_loss` with the stored settings."""
        return entropy_loss(
            logits,
            likelihood=self.likelihood,
            class_dim=self.class_dim,
            output_mask=output_mask,
            reduction=self.reduction,
        )
