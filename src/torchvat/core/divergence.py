r"""Divergences between the clean and the perturbed prediction, per likelihood.

Each divergence takes the clean output (the target, detached by the caller) and the perturbed
output and returns one value per sample, summed over every non-batch dimension. Computation is in
float32 at least, so a bf16 model output is compared in float32.

For the exact curvature product used by :func:`torchvat.vat_loss` with ``probe="exact"``, each
built-in likelihood also gives :math:`A v`, the Hessian of the divergence with respect to the
perturbed output at the clean output (the Fisher information of the likelihood).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from torchvat import params
from torchvat.core._checks import CLASS_DIM_HINT, check_choice, check_class_dim

LIKELIHOODS = params.choices("likelihood")
Divergence = Callable[[Tensor, Tensor], Tensor]


def _upcast(t: Tensor) -> Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _per_sample_sum(t: Tensor) -> Tensor:
    """Sum over every non-batch dimension: [B, ...] -> [B] (a [B] tensor is returned as is)."""
    return t.reshape(t.shape[0], -1).sum(1)


def _check_ndim(name: str, min_ndim: int, layout: str, **tensors: Tensor) -> None:
    """Raise ``ValueError`` unless each of ``tensors`` (keyword: its argument name) has ``min_ndim`` dimensions."""
    for arg, t in tensors.items():
        if t.ndim < min_ndim:
            raise ValueError(f"{name} needs {arg} of shape {layout}, got shape {tuple(t.shape)}")


def _check_classes(class_dim: int = 1, **tensors: Tensor) -> None:
    """Raise ``ValueError`` unless each of ``tensors`` has a class dimension ``class_dim`` of size 2 or more.

    Softmax over a single class is 1 whatever the logit: a [B, 1] (or [B, 1, H, W]) output would
    give a divergence of 0 for every input, silently.
    """
    check_class_dim(class_dim)
    for arg, t in tensors.items():
        dim = class_dim + t.ndim if class_dim < 0 else class_dim
        if t.ndim < 2 or not 1 <= dim < t.ndim or t.shape[dim] < 2:
            layout = "[B, C, ...]" if class_dim == 1 else f"[B, ...] with C >= 2 classes in dimension {class_dim}"
            hint = CLASS_DIM_HINT if class_dim == 1 else ""
            raise ValueError(f"{_CATEGORICAL} needs {arg} of shape {layout}, got shape {tuple(t.shape)}{hint}")


_CATEGORICAL = "categorical_kl (likelihood='categorical')"


def categorical_kl(clean: Tensor, perturbed: Tensor, *, class_dim: int = 1) -> Tensor:
    r"""KL divergence between softmax distributions over the class dimension, one value per sample.

    .. math::
        D(z, \hat z) = \sum_k p_k (\log p_k - \log q_k),\quad p = \mathrm{softmax}(z),\ q = \mathrm{softmax}(\hat z)

    Args:
        clean: logits of the target distribution ``p``, shape [B, C, ...] (``class_dim=1``) or
            [B, ..., C] (``class_dim=-1``: token classification, language-model heads).
        perturbed: logits of ``q``, same shape.
        class_dim: the class dimension, over which the softmax is taken (negative counts from the end).

    Returns:
        Tensor of shape [B], KL(p || q) summed over every position (every non-batch, non-class dimension).

    Raises:
        ValueError: if ``clean`` or ``perturbed`` has no class dimension of size 2 or more (a [B]
            or [B, 1, ...] output: softmax over one class is 1, so the divergence would always be 0).

    Example:
        >>> z = torch.tensor([[0.0, 0.0]])
        >>> round(categorical_kl(z, torch.tensor([[0.0, 1.0]])).item(), 4)
        0.1201
        >>> tokens = torch.randn(2, 5, 3)  # [B, T, C]
        >>> other = torch.randn(2, 5, 3)
        >>> torch.allclose(categorical_kl(tokens, other, class_dim=-1),
        ...                categorical_kl(tokens.transpose(1, 2), other.transpose(1, 2)))
        True
    """
    _check_classes(class_dim, clean=clean, perturbed=perturbed)
    logp = F.log_softmax(_upcast(clean), dim=class_dim)
    logq = F.log_softmax(_upcast(perturbed), dim=class_dim)
    return _per_sample_sum(logp.exp() * (logp - logq))


def bernoulli_kl(clean: Tensor, perturbed: Tensor) -> Tensor:
    r"""KL divergence between independent Bernoulli outputs (sigmoid of the logits), summed per sample.

    .. math::
        D(a, b) = \sum_j \sigma(a_j)\log\frac{\sigma(a_j)}{\sigma(b_j)}
                  + \sigma(-a_j)\log\frac{\sigma(-a_j)}{\sigma(-b_j)}

    Serves binary and multi-label classification. Shapes: [B, ...] -> [B]; a binary classifier's
    [B] output (one logit per sample) is accepted.

    Example:
        >>> round(bernoulli_kl(torch.tensor([[0.0]]), torch.tensor([[2.0]])).item(), 4)
        0.4338
    """
    _check_ndim("bernoulli_kl", 1, "[B, ...]", clean=clean, perturbed=perturbed)
    a, b = _upcast(clean), _upcast(perturbed)
    p = torch.sigmoid(a)
    kl = p * (F.logsigmoid(a) - F.logsigmoid(b)) + (1 - p) * (F.logsigmoid(-a) - F.logsigmoid(-b))
    return _per_sample_sum(kl)


def gaussian_divergence(clean: Tensor, perturbed: Tensor) -> Tensor:
    r"""Half squared error, the KL divergence between unit-variance Gaussians (regression).

    .. math:: D(\mu, \hat\mu) = \tfrac12 \lVert \hat\mu - \mu \rVert^2

    Shapes: [B, ...] -> [B]; a [B] output (one value per sample) is accepted.

    Example:
        >>> gaussian_divergence(torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 0.0]])).item()
        2.5
    """
    _check_ndim("gaussian_divergence", 1, "[B, ...]", clean=clean, perturbed=perturbed)
    return 0.5 * _per_sample_sum((_upcast(perturbed) - _upcast(clean)).pow(2))


def _categorical_fisher(clean: Tensor, v: Tensor) -> Tensor:
    _check_classes(1, clean=clean)
    p = torch.softmax(_upcast(clean), dim=1)
    v = _upcast(v)
    return p * v - p * (p * v).sum(1, keepdim=True)


def _bernoulli_fisher(clean: Tensor, v: Tensor) -> Tensor:
    s = torch.sigmoid(_upcast(clean))
    return s * (1 - s) * _upcast(v)


def _gaussian_fisher(clean: Tensor, v: Tensor) -> Tensor:
    return _upcast(v)


_DIVERGENCES: dict[str, Divergence] = {
    "categorical": categorical_kl,
    "bernoulli": bernoulli_kl,
    "gaussian": gaussian_divergence,
}
_FISHER: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "categorical": _categorical_fisher,
    "bernoulli": _bernoulli_fisher,
    "gaussian": _gaussian_fisher,
}


def resolve_divergence(likelihood: str, divergence: Divergence | None) -> Divergence:
    """The divergence for a ``likelihood`` name, or the user's ``divergence`` callable."""
    if divergence is not None:
        if not callable(divergence):
            raise TypeError(
                f"divergence must be callable(clean, perturbed) -> Tensor[B], got {type(divergence).__name__}"
            )
        return divergence
    check_choice("likelihood", likelihood, LIKELIHOODS)
    return _DIVERGENCES[likelihood]


def _swapped(divergence: Divergence, clean: Tensor, perturbed: Tensor) -> Tensor:
    return divergence(perturbed, clean)


def reversed_divergence(likelihood: str) -> Divergence:
    r"""The likelihood's divergence with its arguments swapped: :math:`\mathrm{KL}(q \,\|\, p)`.

    The VAT papers use :math:`\mathrm{KL}(p(x) \,\|\, p(x + r))`, the clean prediction first;
    Oliver et al. 2018 (brain-research/realistic-ssl-evaluation, ``lib/ssl_utils.py:84-111``,
    ``lib/ssl_framework.py:175-183``) use :math:`\mathrm{KL}(p(x + r) \,\|\, p(x))`, which their code
    calls ``"forward_kl"`` of (student, teacher). Both vanish with their gradient at :math:`r = 0` and
    have the same Hessian there (the Fisher information), so the power iteration finds the same
    direction to first order in ``xi``; the loss at ``eps`` differs.

    Args:
        likelihood: ``"categorical"``, ``"bernoulli"`` or ``"gaussian"`` (symmetric: unchanged).

    Returns:
        ``callable(clean, perturbed) -> Tensor[B]`` for ``vat_loss(divergence=...)``.

    Raises:
        ValueError: If ``likelihood`` is not one of the built-in likelihoods.

    Example:
        >>> p, q = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        >>> torch.equal(reversed_divergence("categorical")(p, q), categorical_kl(q, p))
        True
    """
    check_choice("likelihood", likelihood, LIKELIHOODS)
    return functools.partial(_swapped, _DIVERGENCES[likelihood])


def checked_divergence(div: Divergence, clean: Tensor, perturbed: Tensor) -> Tensor:
    """Call ``div`` and check that it returned one value per sample."""
    out = div(clean, perturbed)
    if not isinstance(out, Tensor) or out.shape != (clean.shape[0],):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"divergence must return a per-sample tensor of shape [{clean.shape[0]}], got {got}")
    return out


def fisher_product(likelihood: str, divergence: Divergence | None, clean: Tensor, v: Tensor) -> Tensor:
    r"""The Hessian-vector product :math:`A v` of the divergence in output space, at ``perturbed = clean``.

    Closed forms for the built-in likelihoods; double backward through a user ``divergence``.
    """
    if divergence is None:
        return _FISHER[likelihood](clean, v)
    z = _upcast(clean.detach()).requires_grad_(True)
    with torch.enable_grad():
        value = checked_divergence(divergence, clean.detach(), z).sum()
        (g,) = torch.autograd.grad(value, z, create_graph=True, allow_unused=True)
        if g is None or not g.requires_grad:
            return torch.zeros_like(z)
        (hv,) = torch.autograd.grad(g, z, grad_outputs=_upcast(v), allow_unused=True)
    return torch.zeros_like(z) if hv is None else hv
