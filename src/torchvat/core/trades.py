r"""TRADES: the divergence of VAT maximized by projected gradient ascent (Zhang et al., ICML 2019)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from torchvat.core._checks import (
    NORMS,
    REDUCTIONS,
    EpsModule,
    ModelInput,
    OutputLayout,
    Reduction,
    broadcast_mask,
    check_choice,
    check_class_dim,
    check_grad_mode,
    check_nonnegative,
    extract_output,
    reduce,
)
from torchvat.core.divergence import Divergence, checked_divergence, resolve_divergence
from torchvat.core.guards import RNGSnapshot, running_stats_guard
from torchvat.core.perturbation import _MODEL_OUTPUT, Norm, _checked_target, check_same_shape, clean_target
from torchvat.core.search import Keep, check_search, projected_gradient_ascent

__all__ = ["TRADESLoss", "trades_loss", "trades_perturbation"]


def trades_perturbation(
    model: Callable[..., Any],
    x: Tensor | Mapping[str, Any],
    *,
    logits: Any = None,
    eps: float | Tensor = 1.0,
    norm: Norm = "l2",
    steps: int = 10,
    step_size: float | Tensor | None = None,
    clamp: tuple[float, float] | None = None,
    keep: Keep = "best",
    likelihood: str = "categorical",
    divergence: Divergence | None = None,
    input_key: str | None = None,
    output_fn: Callable[[Any], Tensor] | None = None,
    mask: Tensor | None = None,
    class_dim: int = 1,
    output_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    rng: RNGSnapshot | None = None,
) -> Tensor:
    r"""The TRADES perturbation :math:`\arg\max_{\lVert r \rVert \le \epsilon} D[p(y \mid x), p(y \mid x + r)]`.

    Projected gradient ascent on the divergence (:func:`torchvat.core.search.projected_gradient_ascent`)
    from a uniform random point of the ball (the divergence's gradient vanishes at :math:`r = 0`);
    see :func:`trades_loss` for every argument. Detached, of the perturbed input's shape.

    Example:
        >>> model = torch.nn.Linear(4, 3)
        >>> r = trades_perturbation(model, torch.randn(5, 4), eps=0.5, steps=5)
        >>> bool((r.norm(dim=1) <= 0.5 + 1e-6).all())
        True
    """
    return _trades(
        model,
        x,
        logits,
        eps,
        norm,
        steps,
        step_size,
        clamp,
        keep,
        likelihood,
        divergence,
        input_key,
        output_fn,
        mask,
        class_dim,
        output_mask,
        generator,
        rng,
        "trades_perturbation",
        None,
    )


def trades_loss(
    model: Callable[..., Any],
    x: Tensor | Mapping[str, Any],
    *,
    logits: Any = None,
    eps: float | Tensor = 1.0,
    norm: Norm = "l2",
    steps: int = 10,
    step_size: float | Tensor | None = None,
    clamp: tuple[float, float] | None = None,
    keep: Keep = "best",
    likelihood: str = "categorical",
    divergence: Divergence | None = None,
    input_key: str | None = None,
    output_fn: Callable[[Any], Tensor] | None = None,
    mask: Tensor | None = None,
    class_dim: int = 1,
    output_mask: Tensor | None = None,
    reduction: Reduction = "mean",
    generator: torch.Generator | None = None,
    rng: RNGSnapshot | None = None,
) -> Tensor:
    r"""The robust term of TRADES (Zhang et al. 2019): VAT's divergence at a PGD-maximized perturbation.

    TRADES minimizes

    .. math::
        \ell\big(f(x), y\big) + \beta\, \mathrm{KL}\big[p(y \mid x) \,\big\|\, p(y \mid x + r_{\mathrm{trades}})\big],
        \qquad r_{\mathrm{trades}} = \arg\max_{\lVert r \rVert \le \epsilon}
        \mathrm{KL}\big[p(y \mid x) \,\big\|\, p(y \mid x + r)\big],

    and this function is the second term without :math:`\beta`, one value per sample before the
    reduction. :math:`r_{\mathrm{trades}}` is found by ``steps`` steps of projected gradient
    ascent on the divergence (the search of :func:`torchvat.adversarial_perturbation` with the
    divergence as objective) from a uniform random point of the ball, where VAT
    (:func:`torchvat.vat_loss`) takes the top eigenvector of the divergence's curvature at
    :math:`r = 0` by power iteration. Zhang et al. start at :math:`x + 0.001\,\mathcal{N}(0, I)`
    (images in [0, 1]); a point of the ball is the scale-free start. No label is needed: the term
    regularizes unlabeled rows as VAT's does (Carmon et al. 2019 and Uesato et al. 2019 show that
    unlabeled data improves adversarial robustness). Add ``loss + beta * trades_loss(...)``
    (``beta`` = 1 to 6 in the paper, 6 for the CIFAR-10 results).

    As in the paper, the clean prediction is not a constant: with ``logits`` carrying their graph,
    the gradient of this term reaches the parameters through both the clean and the perturbed
    pass (detach ``logits`` for VAT's convention of a constant target); without ``logits``, the
    clean pass is made here (running statistics frozen, ``rng`` replayed) in the caller's grad
    mode. The search itself uses the detached clean prediction.

    The call costs ``steps`` input-gradient passes, the perturbed pass, one forward pass for the
    last iterate with ``keep="best"``, and the clean pass without ``logits``. Parameter ``.grad``,
    BatchNorm and InstanceNorm running statistics, spectral-norm vectors and ``model.training``
    are left as found (for a module, a bound method of one or a ``functools.partial`` of either).
    The target must come from a pass with the batch composition of ``x`` (BatchNorm): given
    ``logits`` are checked once per model, as by :func:`torchvat.vat_loss`.

    Args:
        model: the model; called as ``model(x)``, or ``model(**x)`` when ``x`` is a mapping.
        x: input [B, ...] (floating point), or a mapping of tensors with ``input_key`` naming the
            entry to perturb.
        logits: the clean model output on ``x``, if the caller has it (see above).
        eps: radius of the ball in ``norm`` (a number or a per-sample tensor [B]); 0 gives 0.
        norm: ``"l2"`` or ``"linf"`` (the paper's).
        steps: gradient steps (the paper: 10 on CIFAR-10, 40 on MNIST).
        step_size: the size of each step; default ``2.5 * eps / steps`` (Madry et al. 2018).
        clamp: ``(lo, hi)`` bounds of the perturbed input (``(0, 1)`` for images), or ``None``.
        keep: ``"best"`` (the iterate of highest divergence per sample) or ``"last"`` (the paper's).
        likelihood: ``"categorical"`` (KL between softmaxes), ``"bernoulli"`` or ``"gaussian"``.
        divergence: ``callable(clean, perturbed) -> Tensor[B]``; replaces ``likelihood``.
        input_key: the entry of a mapping ``x`` to perturb.
        output_fn: maps the model output to the prediction.
        mask: 1 where the input may be perturbed, broadcast to the input.
        class_dim: the class dimension of the model's output (1, or -1 for ``[B, T, C]``).
        output_mask: 1 where an output position counts, of the output's shape without its class
            dimension.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"`` over the batch.
        generator: generator for the random start (reproducible searches).
        rng: an :class:`~torchvat.RNGSnapshot` captured before the caller's clean pass; every pass
            replays it (the clean pass's dropout masks).

    Shape:
        - x: [B, *] (or a mapping whose ``input_key`` entry is [B, *]).
        - output: [] for ``"mean"``/``"sum"``, [B] for ``"none"``.

    Returns:
        The divergence, differentiable with respect to the parameters through the perturbed pass
        (and the clean one, see above).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
        >>> x, y = torch.randn(8, 2), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
        >>> logits = model(x)
        >>> robust = trades_loss(model, x, logits=logits, eps=0.5, norm="linf", steps=10)
        >>> (torch.nn.functional.cross_entropy(logits, y) + 6.0 * robust).backward()
        >>> bool(robust > 0)
        True

    References:
        H. Zhang, Y. Yu, J. Jiao, E. P. Xing, L. El Ghaoui, M. I. Jordan. Theoretically Principled
        Trade-off between Robustness and Accuracy. ICML 2019 (arXiv:1901.08573).
    """
    check_choice("reduction", reduction, REDUCTIONS)
    return reduce(
        _trades(
            model,
            x,
            logits,
            eps,
            norm,
            steps,
            step_size,
            clamp,
            keep,
            likelihood,
            divergence,
            input_key,
            output_fn,
            mask,
            class_dim,
            output_mask,
            generator,
            rng,
            "trades_loss",
            reduction,
        ),
        reduction,
    )


def _trades(
    model: Callable[..., Any],
    x: Tensor | Mapping[str, Any],
    logits: Any,
    eps: float | Tensor,
    norm: str,
    steps: int,
    step_size: float | Tensor | None,
    clamp: tuple[float, float] | None,
    keep: Keep,
    likelihood: str,
    divergence: Divergence | None,
    input_key: str | None,
    output_fn: Callable[[Any], Tensor] | None,
    mask: Tensor | None,
    class_dim: int,
    output_mask: Tensor | None,
    generator: torch.Generator | None,
    rng: RNGSnapshot | None,
    caller: str,
    reduction: str | None,
) -> Tensor:
    """The perturbation (``reduction is None``) or the per-sample divergence at it."""
    check_grad_mode(caller)
    check_nonnegative("eps", eps)
    check_choice("norm", norm, NORMS)
    check_search(steps, step_size, True, clamp, keep)
    div = resolve_divergence(likelihood, divergence)
    out_fn = OutputLayout(class_dim, output_mask).output_fn(output_fn)
    inp = ModelInput(x, input_key)
    m = broadcast_mask(mask, inp.tensor)
    replays = rng is not None
    rng = rng if rng is not None else RNGSnapshot.capture(inp.tensor.device)
    source = "logits" if logits is not None else _MODEL_OUTPUT
    with running_stats_guard(model):
        if logits is None:
            # the perturbation alone needs no graph of the clean pass
            grad_mode = torch.no_grad() if reduction is None else contextlib.nullcontext()
            with rng.replay(), grad_mode:
                clean = extract_output(inp.call(model, inp.tensor), out_fn)
            target = _checked_target(clean, inp, _MODEL_OUTPUT)
        else:
            clean = extract_output(logits, out_fn)
            target = clean_target(model, inp, logits, out_fn, rng, replays)
        if reduction is not None and not isinstance(eps, Tensor) and eps == 0:
            dtype = torch.promote_types(target.dtype, torch.float32)
            return torch.zeros(target.shape[0], device=target.device, dtype=dtype)

        def divergence_at(xp: Tensor) -> Tensor:
            with rng.replay():
                pred = extract_output(inp.call(model, xp), out_fn)
            check_same_shape(target, pred, source)
            return checked_divergence(div, target, pred)

        r = projected_gradient_ascent(
            divergence_at,
            inp.tensor,
            eps=eps,
            norm=norm,
            steps=steps,
            step_size=step_size,
            random_start=True,
            clamp=clamp,
            keep=keep,
            mask=m,
            generator=generator,
        )
        if reduction is None:
            return r
        with rng.replay():
            pred = extract_output(inp.call(model, inp.tensor + r), out_fn)
    check_same_shape(target, pred, source)
    return checked_divergence(div, clean, pred).clamp_min(0.0)


class TRADESLoss(EpsModule):
    """Module twin of :func:`trades_loss`: stores the hyperparameters; ``forward`` is one call.

    Args:
        eps: Radius of the ball (see :func:`trades_loss`, as for every argument here).
        norm: ``"l2"`` or ``"linf"``.
        steps: Gradient steps of the search.
        step_size: The size of each step; ``None``: ``2.5 * eps / steps``.
        clamp: ``(lo, hi)`` bounds of the perturbed input, or ``None``.
        keep: ``"best"`` or ``"last"`` iterate.
        likelihood: The model output's likelihood.
        divergence: A divergence replacing the likelihood's.
        input_key: The entry of a mapping input to perturb.
        output_fn: Extracts the prediction from the model's output.
        class_dim: The class dimension of the output.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Example:
        >>> criterion = TRADESLoss(eps=0.1, norm="linf", steps=5)
        >>> criterion(torch.nn.Linear(4, 3), torch.randn(6, 4)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        eps: float | Tensor = 1.0,
        norm: Norm = "l2",
        steps: int = 10,
        step_size: float | Tensor | None = None,
        clamp: tuple[float, float] | None = None,
        keep: Keep = "best",
        likelihood: str = "categorical",
        divergence: Divergence | None = None,
        input_key: str | None = None,
        output_fn: Callable[[Any], Tensor] | None = None,
        class_dim: int = 1,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        check_nonnegative("eps", eps)
        check_choice("norm", norm, NORMS)
        check_search(steps, step_size, True, clamp, keep)
        resolve_divergence(likelihood, divergence)
        check_class_dim(class_dim)
        check_choice("reduction", reduction, REDUCTIONS)
        self.eps = eps
        self.norm, self.steps, self.step_size, self.clamp, self.keep = norm, steps, step_size, clamp, keep
        self.likelihood, self.divergence = likelihood, divergence
        self.input_key, self.output_fn, self.class_dim, self.reduction = input_key, output_fn, class_dim, reduction

    def forward(
        self,
        model: Callable[..., Any],
        x: Tensor | Mapping[str, Any],
        logits: Any = None,
        *,
        mask: Tensor | None = None,
        output_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        rng: RNGSnapshot | None = None,
    ) -> Tensor:
        """Compute :func:`trades_loss` with the stored hyperparameters."""
        return trades_loss(
            model,
            x,
            logits=logits,
            eps=self.eps,
            norm=self.norm,
            steps=self.steps,
            step_size=self.step_size,
            clamp=self.clamp,
            keep=self.keep,
            likelihood=self.likelihood,
            divergence=self.divergence,
            input_key=self.input_key,
            output_fn=self.output_fn,
            mask=mask,
            class_dim=self.class_dim,
            output_mask=output_mask,
            reduction=self.reduction,
            generator=generator,
            rng=rng,
        )

    def extra_repr(self) -> str:
        """Hyperparameters shown in ``repr``."""
        return (
            f"eps={self.eps}, norm={self.norm!r}, steps={self.steps}, step_size={self.step_size}, "
            f"clamp={self.clamp}, keep={self.keep!r}, likelihood={self.likelihood!r}"
            + (f", class_dim={self.class_dim}" if self.class_dim != 1 else "")
        )
