r"""Adversarial training: one step (Goodfellow et al. 2015) and projected gradient descent (Madry et al. 2018)."""

from __future__ import annotations

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
from torchvat.core.guards import RNGSnapshot, running_stats_guard
from torchvat.core.perturbation import (
    Norm,
    default_loss_fn,
    per_sample_loss,
)
from torchvat.core.perturbation import one_step_adversarial_perturbation as _one_step
from torchvat.core.search import Keep, check_search, projected_gradient_ascent

__all__ = ["AdversarialLoss", "adversarial_loss", "adversarial_perturbation"]


def adversarial_perturbation(
    model: Callable[..., Any],
    x: Tensor | Mapping[str, Any],
    y: Any,
    *,
    logits: Any = None,
    eps: float | Tensor = 1.0,
    norm: Norm = "l2",
    steps: int = 1,
    step_size: float | Tensor | None = None,
    random_start: bool = False,
    clamp: tuple[float, float] | None = None,
    keep: Keep = "best",
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    input_key: str | None = None,
    output_fn: Callable[[Any], Tensor] | None = None,
    mask: Tensor | None = None,
    class_dim: int = 1,
    output_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    rng: RNGSnapshot | None = None,
) -> Tensor:
    r"""The adversarial perturbation: one step (Goodfellow et al. 2015) or PGD (Madry et al. 2018).

    .. math::
        r_{\mathrm{adv}} = \epsilon\, \frac{g}{\lVert g \rVert_2} \ (\text{L2}),\qquad
        r_{\mathrm{adv}} = \epsilon\, \mathrm{sign}(g) \ (\text{L-inf, FGSM}),\qquad
        g = \nabla_x \ell\big(f(x), y\big)

    with ``steps=1`` (the default). With ``steps`` :math:`K > 1` it is projected gradient descent
    on the loss (PGD): :math:`K` steps of size :math:`a` (``step_size``, default
    :math:`2.5\,\epsilon / K` as in Madry et al.) in the normalized gradient (L2) or its sign
    (L-inf), each projected onto the :math:`\epsilon`-ball and, with ``clamp``, the input bounds
    (see :func:`torchvat.core.search.projected_gradient_ascent`). ``eps`` is the radius in ``norm``
    itself: for L-inf the largest change of one input element (the command line's FGSM column
    uses ``eps / sqrt(d)`` there, to put L-inf on the L2 axis).

    ``keep="best"`` (default) returns, per sample, the candidate of highest loss among the
    iterates and, without a random start, the one-step perturbation itself: more steps never give
    a smaller loss than one step (for a model whose samples do not interact; BatchNorm in training
    mode couples them). ``keep="last"`` returns the last iterate, as other libraries do.

    Args:
        model: the model (any callable). BatchNorm and InstanceNorm running statistics are left as
            found when it is a module, a bound method of one (``model.forward``) or a
            ``functools.partial`` of either; any other callable (a lambda, a function calling the
            model) cannot be looked into, and the gradient passes update the statistics of the
            layers they run: pass the module itself.
        x: input tensor [B, ...] or a mapping of tensors (see ``input_key``).
        y: targets accepted by ``loss_fn``.
        logits: the clean output, if the caller has it. When ``x`` (the perturbed tensor)
            requires grad and ``logits`` were computed from it, the first input gradient is taken
            through that graph (``retain_graph=True``), saving a forward pass. Otherwise, also when
            ``logits`` come from a pass that did not take this ``x`` (say ``model(input_ids=...)``
            while ``x`` holds embeddings computed apart), a forward pass of its own is made. Not
            used with ``random_start=True`` (the first gradient is taken at the random start).
        eps: perturbation size, a number or a per-sample tensor [B], in ``norm``.
        norm: ``"l2"`` or ``"linf"``.
        steps: gradient steps (1: the one-step perturbation; more: PGD).
        step_size: the size of each step (a number or a per-sample tensor [B]); default
            ``2.5 * eps / steps``, whose single step (``steps=1``) is projected to ``eps``.
        random_start: start from a uniform random point of the ball instead of ``x``.
        clamp: ``(lo, hi)``: keep ``x + r`` within these bounds (``(0, 1)`` for images); ``None``
            (default): no bounds, as inputs may be embeddings or points of any range.
        keep: ``"best"`` or ``"last"`` (see above).
        loss_fn: ``loss_fn(output, y)`` returning per-sample (or per-position) losses, averaged per
            sample over the positions; cross entropy by default. It receives the output with its
            class dimension at 1 (``[B, C, *positions]``, see ``class_dim``).
        input_key: the entry of a mapping ``x`` to perturb.
        output_fn: maps the model output to the prediction tensor.
        mask: 1 where the input may be perturbed, broadcast to the input's shape.
        class_dim: the class dimension of the model's output: 1 (default, ``[B, C, ...]``) or
            -1 for ``[B, T, C]`` token classification; see :func:`torchvat.vat_loss`.
        output_mask: 1 where an output position counts, of the output's shape without its class
            dimension (``[B, T]`` for ``[B, T, C]``): the loss is averaged per sample over the
            positions that count. ``loss_fn`` must then return one loss per position.
        generator: generator for the random start (reproducible starts).
        rng: generator state to replay for every pass (same dropout masks as the clean pass).

    Returns:
        Detached tensor with the shape of the perturbed input, inside the ``eps``-ball (and, with
        ``clamp``, with ``x + r`` inside the bounds up to rounding).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(4, 3)
        >>> x, y = torch.rand(2, 4), torch.tensor([0, 2])  # inputs in [0, 1]
        >>> adversarial_perturbation(model, x, y, eps=0.1, norm="linf").abs().max().item()
        0.10000000149011612
        >>> r = adversarial_perturbation(model, x, y, eps=0.1, norm="linf", steps=10, clamp=(0.0, 1.0))
        >>> bool(r.abs().max() <= 0.1 + 1e-6 and (x + r).min() >= 0.0 and (x + r).max() <= 1.0)
        True

    References:
        I. Goodfellow, J. Shlens, C. Szegedy. Explaining and Harnessing Adversarial Examples.
        ICLR 2015 (arXiv:1412.6572).
        A. Madry, A. Makelov, L. Schmidt, D. Tsipras, A. Vladu. Towards Deep Learning Models
        Resistant to Adversarial Attacks. ICLR 2018 (arXiv:1706.06083).
    """
    check_grad_mode("adversarial_perturbation")
    check_nonnegative("eps", eps)
    check_choice("norm", norm, NORMS)
    check_search(steps, step_size, random_start, clamp, keep)
    layout = OutputLayout(class_dim, output_mask, zero_masked=False)
    inp = ModelInput(x, input_key)
    m = broadcast_mask(mask, inp.tensor)
    loss_fn = loss_fn or default_loss_fn
    rng = rng if rng is not None else RNGSnapshot.capture(inp.tensor.device)
    first = None
    if not random_start:
        # the unit direction at x (eps=1): the one-step perturbation's own code, logits reuse included
        first = _one_step(
            model,
            x,
            y,
            logits=logits,
            eps=1.0,
            norm=norm,
            loss_fn=loss_fn,
            input_key=input_key,
            output_fn=output_fn,
            mask=mask,
            class_dim=class_dim,
            output_mask=output_mask,
            rng=rng,
        )
    out_fn = layout.output_fn(output_fn)

    def loss_at(xp: Tensor) -> Tensor:
        with rng.replay():
            pred = extract_output(inp.call(model, xp), out_fn)
        return per_sample_loss(loss_fn, pred, y, layout.position_mask(pred))

    with running_stats_guard(model):
        return projected_gradient_ascent(
            loss_at,
            inp.tensor,
            eps=eps,
            norm=norm,
            steps=steps,
            step_size=step_size,
            random_start=random_start,
            clamp=clamp,
            keep=keep,
            mask=m,
            generator=generator,
            first_direction=first,
        )


def adversarial_loss(
    model: Callable[..., Any],
    x: Tensor | Mapping[str, Any],
    y: Any,
    *,
    logits: Any = None,
    eps: float | Tensor = 1.0,
    norm: Norm = "l2",
    steps: int = 1,
    step_size: float | Tensor | None = None,
    random_start: bool = False,
    clamp: tuple[float, float] | None = None,
    keep: Keep = "best",
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    input_key: str | None = None,
    output_fn: Callable[[Any], Tensor] | None = None,
    mask: Tensor | None = None,
    class_dim: int = 1,
    output_mask: Tensor | None = None,
    reduction: Reduction = "mean",
    generator: torch.Generator | None = None,
    rng: RNGSnapshot | None = None,
) -> Tensor:
    r"""The supervised loss on the adversarial example :math:`x + r_{\mathrm{adv}}` (Goodfellow et al. 2015; PGD).

    .. math::
        L_{\mathrm{adv}}(x, y) = \ell\big(f(x + r_{\mathrm{adv}}), y\big),\qquad
        r_{\mathrm{adv}} = \epsilon\,\overline{\nabla_x \ell(f(x), y)}

    with :math:`\overline{g}` the L2-normalized gradient, or its sign for ``norm="linf"`` (FGSM).
    With ``steps > 1``, :math:`r_{\mathrm{adv}}` is found by projected gradient descent (PGD,
    Madry et al. 2018) in the :math:`\epsilon`-ball: :math:`\max_{\lVert r \rVert \le \epsilon}
    \ell(f(x + r), y)`, and minimizing :math:`L_{\mathrm{adv}}` is PGD adversarial training.
    Adversarial training minimizes :math:`\ell(f(x), y) + \alpha L_{\mathrm{adv}}(x, y)`: clean
    example and adversarial example against the label (Madry et al. use the second term alone).
    See :func:`adversarial_perturbation` for the arguments (``steps``, ``step_size``,
    ``random_start``, ``clamp``, ``keep``, ``generator`` among them); ``reduction`` is
    ``"none" | "mean" | "sum"``. The perturbation is a constant; the gradient reaches the
    parameters through the perturbed pass. Parameter ``.grad``, BatchNorm and InstanceNorm running
    statistics and ``model.training`` are left as found when ``model`` is a module, a bound method
    of one (``model.forward``) or a ``functools.partial`` of either; a lambda or other function
    cannot be looked into, and its layers' running statistics are updated by the gradient and
    perturbed passes: pass the module itself. Every pass replays ``rng`` (the clean pass's dropout
    masks). Under ``torch.inference_mode()``, where no input gradient can be taken, it raises
    ``RuntimeError`` (``torch.no_grad()`` is fine).

    The call costs ``steps`` input-gradient passes (the first one saved when ``logits`` carry
    the graph of ``x``), the perturbed pass, and, for ``steps > 1`` with ``keep="best"``, one
    forward pass for the last iterate and one for the one-step candidate (when ``step_size < eps`` or with ``clamp``).

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
        >>> fgsm = adversarial_loss(model, x, y, eps=0.5)
        >>> pgd = adversarial_loss(model, x, y, eps=0.5, steps=10)
        >>> bool(fgsm > clean), bool(pgd >= fgsm)
        (True, True)

    References:
        I. Goodfellow, J. Shlens, C. Szegedy. Explaining and Harnessing Adversarial Examples.
        ICLR 2015 (arXiv:1412.6572).
        A. Madry, A. Makelov, L. Schmidt, D. Tsipras, A. Vladu. Towards Deep Learning Models
        Resistant to Adversarial Attacks. ICLR 2018 (arXiv:1706.06083).
    """
    check_grad_mode("adversarial_loss")
    check_nonnegative("eps", eps)
    check_choice("norm", norm, NORMS)
    check_search(steps, step_size, random_start, clamp, keep)
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
        steps=steps,
        step_size=step_size,
        random_start=random_start,
        clamp=clamp,
        keep=keep,
        loss_fn=loss_fn,
        input_key=input_key,
        output_fn=output_fn,
        mask=mask,
        class_dim=class_dim,
        output_mask=output_mask,
        generator=generator,
        rng=rng,
    )
    with running_stats_guard(model), rng.replay():
        pred = layout.apply(extract_output(inp.call(model, inp.tensor + r), output_fn))
    return reduce(per_sample_loss(loss_fn, pred, y, layout.position_mask(pred)), reduction)


class AdversarialLoss(EpsModule):
    """Module twin of :func:`adversarial_loss`: stores the hyperparameters; ``forward`` is one call.

    Args:
        eps: Perturbation size (see :func:`adversarial_perturbation`, as for every argument here).
        norm: ``"l2"`` or ``"linf"``.
        steps: Gradient steps (1: one step; more: PGD).
        step_size: The size of each step; ``None``: ``2.5 * eps / steps``.
        random_start: Start from a random point of the ball.
        clamp: ``(lo, hi)`` bounds of the perturbed input, or ``None``.
        keep: ``"best"`` or ``"last"`` iterate.
        loss_fn: Per-sample loss; cross entropy by default.
        input_key: The entry of a mapping input to perturb.
        output_fn: Extracts the prediction from the model's output.
        class_dim: The class dimension of the output.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Example:
        >>> criterion = AdversarialLoss(eps=0.1, norm="linf")
        >>> criterion(torch.nn.Linear(4, 3), torch.randn(2, 4), torch.tensor([0, 1])).shape
        torch.Size([])
        >>> AdversarialLoss(eps=0.1, norm="linf", steps=10, clamp=(0.0, 1.0)).steps
        10
    """

    def __init__(
        self,
        *,
        eps: float | Tensor = 1.0,
        norm: Norm = "l2",
        steps: int = 1,
        step_size: float | Tensor | None = None,
        random_start: bool = False,
        clamp: tuple[float, float] | None = None,
        keep: Keep = "best",
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        input_key: str | None = None,
        output_fn: Callable[[Any], Tensor] | None = None,
        class_dim: int = 1,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        check_nonnegative("eps", eps)
        check_choice("norm", norm, NORMS)
        check_search(steps, step_size, random_start, clamp, keep)
        check_class_dim(class_dim)
        check_choice("reduction", reduction, REDUCTIONS)
        self.norm, self.loss_fn = norm, loss_fn
        self.eps = eps
        self.steps, self.step_size, self.random_start, self.clamp, self.keep = (
            steps,
            step_size,
            random_start,
            clamp,
            keep,
        )
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
        generator: torch.Generator | None = None,
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
            steps=self.steps,
            step_size=self.step_size,
            random_start=self.random_start,
            clamp=self.clamp,
            keep=self.keep,
            loss_fn=self.loss_fn,
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
        """Hyperparameters shown in ``repr`` (the search's only when it has more than one step)."""
        text = f"eps={self.eps}, norm={self.norm!r}"
        if self.steps != 1 or self.random_start or self.clamp is not None:
            text += (
                f", steps={self.steps}, step_size={self.step_size}, random_start={self.random_start}, "
                f"clamp={self.clamp}, keep={self.keep!r}"
            )
        if self.class_dim != 1:
            text += f", class_dim={self.class_dim}"
        return text
