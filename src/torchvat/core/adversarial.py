r"""Adversarial training (Goodfellow, Shlens & Szegedy, ICLR 2015)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from torchvat.core._checks import (
    NORMS,
    REDUCTIONS,
    EpsModule,
    ModelInput,
    OutputLayout,
    Reduction,
    check_choice,
    check_class_dim,
    check_grad_mode,
    check_nonnegative,
    extract_output,
    reduce,
)
from torchvat.core.guards import RNGSnapshot, running_stats_guard
from torchvat.core.perturbation import (
    Norm,
    adversarial_perturbation,
    default_loss_fn,
    per_sample_loss,
)

__all__ = ["AdversarialLoss", "adversarial_loss"]


def adversarial_loss(
    model: Callable[..., Any],
    x: Tensor | Mapping[str, Any],
    y: Any,
    *,
    logits: Any = None,
    eps: float | Tensor = 1.0,
    norm: Norm = "l2",
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    input_key: str | None = None,
    output_fn: Callable[[Any], Tensor] | None = None,
    mask: Tensor | None = None,
    class_dim: int = 1,
    output_mask: Tensor | None = None,
    reduction: Reduction = "mean",
    rng: RNGSnapshot | None = None,
) -> Tensor:
    r"""The supervised loss on the adversarial example :math:`x + r_{\mathrm{adv}}` (Goodfellow et al. 2015).

    .. math::
        L_{\mathrm{adv}}(x, y) = \ell\big(f(x + r_{\mathrm{adv}}), y\big),\qquad
        r_{\mathrm{adv}} = \epsilon\,\overline{\nabla_x \ell(f(x), y)}

    with :math:`\overline{g}` the L2-normalized gradient, or its sign for ``norm="linf"`` (FGSM).
    Adversarial training minimizes :math:`\ell(f(x), y) + \alpha L_{\mathrm{adv}}(x, y)`: clean
    example and adversarial example against the label. See :func:`adversarial_perturbation` for the
    arguments; ``reduction`` is ``"none" | "mean" | "sum"``. The perturbation is a constant; the
    gradient reaches the parameters through the perturbed pass. Parameter ``.grad``, BatchNorm and
    InstanceNorm running statistics and ``model.training`` are left as found when ``model`` is a
    module, a bound method of one (``model.forward``) or a ``functools.partial`` of either; a
    lambda or other function cannot be looked into, and its layers' running statistics are updated
    by the gradient and perturbed passes: pass the module itself.
    Under ``torch.inference_mode()``, where no input gradient can be taken, it raises
    ``RuntimeError`` (``torch.no_grad()`` is fine).

    With ``class_dim=-1`` (``[B, T, C]`` token classification), the cross entropy is taken over
    the last dimension, ``y`` is [B, T], and ``output_mask`` ([B, T]) leaves positions out of the
    per-sample mean (padded tokens); ``-100`` in ``y`` is ignored, as by ``F.cross_entropy``.

    With the default cross entropy, a class index in ``y`` outside [0, C) other than -100 is a
    ``ValueError`` naming ``y`` and the value (checked when ``y`` is on the CPU; on an accelerator
    the check would cost a host synchronization per call, and torch's device-side check applies).

    Shape:
        - x: [B, *]; y: [B] class indices (or what ``loss_fn`` accepts), [B, *positions] for an
          output with positions.
        - output: [] for ``"mean"``/``"sum"``, [B] for ``"none"``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(4, 3)
        >>> x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
        >>> clean = torch.nn.functional.cross_entropy(model(x), y)
        >>> bool(adversarial_loss(model, x, y, eps=0.5) > clean)
        True

    References:
        I. Goodfellow, J. Shlens, C. Szegedy. Explaining and Harnessing Adversarial Examples.
        ICLR 2015 (arXiv:1412.6572).
    """
    check_grad_mode("adversarial_loss")
    check_nonnegative("eps", eps)
    check_choice("norm", norm, NORMS)
    check_choice("reduction", reduction, REDUCTIONS)
    loss_fn = loss_fn or default_loss_fn
    layout = OutputLayout(class_dim, output_mask, zero_masked=False)
    inp = ModelInput(x, input_key)
    rng = rng if rng is not None else RNGSnapshot.capture(inp.tensor.device)
    r = adversarial_perturbation(
        model,
        x,
        y,
        logits=logits,
        eps=eps,
        norm=norm,
        loss_fn=loss_fn,
        input_key=input_key,
        output_fn=output_fn,
        mask=mask,
        class_dim=class_dim,
        output_mask=output_mask,
        rng=rng,
    )
    with running_stats_guard(model), rng.replay():
        pred = layout.apply(extract_output(inp.call(model, inp.tensor + r), output_fn))
    return reduce(per_sample_loss(loss_fn, pred, y, layout.position_mask(pred)), reduction)


class AdversarialLoss(EpsModule):
    """Module twin of :func:`adversarial_loss`.

    Example:
        >>> criterion = AdversarialLoss(eps=0.1, norm="linf")
        >>> criterion(torch.nn.Linear(4, 3), torch.randn(2, 4), torch.tensor([0, 1])).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        eps: float | Tensor = 1.0,
        norm: Norm = "l2",
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        input_key: str | None = None,
        output_fn: Callable[[Any], Tensor] | None = None,
        class_dim: int = 1,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        check_nonnegative("eps", eps)
        check_choice("norm", norm, NORMS)
        check_class_dim(class_dim)
        check_choice("reduction", reduction, REDUCTIONS)
        self.norm, self.loss_fn = norm, loss_fn
        self.eps = eps
        self.input_key, self.output_fn, self.reduction = input_key, output_fn, reduction
        self.class_dim = class_dim

    def forward(
        self,
        model: Callable[..., Any],
        x: Tensor | Mapping[str, Any],
        y: Any,
        logits: Any = None,
        *,
        mask: Tensor | None = None,
        output_mask: Tensor | None = None,
        rng: RNGSnapshot | None = None,
    ) -> Tensor:
        """Compute :func:`adversarial_loss` with the stored hyperparameters."""
        return adversarial_loss(
            model,
            x,
            y,
            logits=logits,
            eps=self.eps,
            norm=self.norm,
            loss_fn=self.loss_fn,
            input_key=self.input_key,
            output_fn=self.output_fn,
            mask=mask,
            class_dim=self.class_dim,
            output_mask=output_mask,
            reduction=self.reduction,
            rng=rng,
        )

    def extra_repr(self) -> str:
        """Hyperparameters shown in ``repr``."""
        cls = f", class_dim={self.class_dim}" if self.class_dim != 1 else ""
        return f"eps={self.eps}, norm={self.norm!r}{cls}"
