r"""Virtual adversarial training: the local distributional smoothness (LDS) loss."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from torchvat.core._checks import (
    REDUCTIONS,
    EpsModule,
    ModelInput,
    OutputLayout,
    Reduction,
    broadcast_mask,
    check_choice,
    check_class_dim,
    check_grad_mode,
    extract_output,
    reduce,
)
from torchvat.core.divergence import Divergence, checked_divergence, resolve_divergence
from torchvat.core.guards import RNGSnapshot, running_stats_guard
from torchvat.core.perturbation import (
    _MODEL_OUTPUT,
    Norm,
    Probe,
    _reuses_probe_pass,
    _search,
    check_common,
    check_same_shape,
    clean_target,
    low_precision_batchnorm_check,
    resolve_probe,
)

__all__ = ["VATLoss", "vat_loss"]


def vat_loss(
    model: Callable[..., Any],
    x: Tensor | Mapping[str, Any],
    *,
    logits: Any = None,
    eps: float | Tensor = 1.0,
    xi: float | Tensor | str = "auto",
    n_power: int = 1,
    norm: Norm = "l2",
    likelihood: str = "categorical",
    divergence: Divergence | None = None,
    probe: Probe = "auto",
    input_key: str | None = None,
    output_fn: Callable[[Any], Tensor] | None = None,
    mask: Tensor | None = None,
    class_dim: int = 1,
    output_mask: Tensor | None = None,
    reduction: Reduction = "mean",
    generator: torch.Generator | None = None,
    rng: RNGSnapshot | None = None,
) -> Tensor:
    r"""Virtual adversarial loss: the local distributional smoothness of Miyato et al. (TPAMI 2018).

    .. math::
        \mathrm{LDS}(x) = D\big[\,\mathrm{sg}\,p(y \mid x),\; p(y \mid x + r_{\mathrm{vadv}})\big],\qquad
        r_{\mathrm{vadv}} = \arg\max_{\lVert r \rVert \le \epsilon} D\big[p(y \mid x),\, p(y \mid x + r)\big]

    where :math:`\mathrm{sg}` stops the gradient (the target is a constant, as in the paper) and
    :math:`r_{\mathrm{vadv}}` is found by ``n_power`` steps of power iteration (see
    :func:`virtual_adversarial_perturbation`). No label is needed: add ``alpha * vat_loss(...)`` to
    the supervised loss for labeled and unlabeled batches alike.

    The call costs, with ``logits`` given, ``n_power + 1`` forward passes and ``n_power``
    backward passes with respect to the input only; the caller's ``backward()`` then goes through
    the perturbed pass alone. Without ``logits``, one no-grad forward pass more, except with the
    exact probe, whose first (forward-mode) pass yields the clean output as its primal. Parameter
    ``.grad``, BatchNorm and InstanceNorm running statistics, spectral-norm vectors and
    ``model.training`` are left exactly as found, also if the call raises. The search takes input
    gradients: it works under ``torch.no_grad()`` and raises ``RuntimeError`` under
    ``torch.inference_mode()``, where no gradient can be taken.

    Args:
        model: the model; called as ``model(x)``, or ``model(**x)`` when ``x`` is a mapping. Its
            running statistics are protected when it is a module (TorchScript included), a bound
            method of one (``model.forward``) or a ``functools.partial`` of either. Any other
            callable (a lambda, a function calling the model) cannot be looked into: every pass of
            the call then updates the running statistics of the layers it runs. Pass the module
            itself.
        x: input [B, ...] (floating point), or a mapping of tensors with ``input_key`` naming the
            entry to perturb (e.g. ``"inputs_embeds"`` for text); the other entries pass through.
        logits: the clean model output on ``x`` if the caller already computed it; it is detached.
            Without it one extra no-grad forward pass is made.
        eps: perturbation size :math:`\epsilon` (a number or a per-sample tensor [B]); 0 gives 0.
        xi: finite-difference step of the probe. ``"auto"`` (default) scales it to the input's norm
            and the precision the model computes in (see :func:`torchvat.core.perturbation.probe_scale`);
            a number is the absolute step, as in the paper (``1e-6``, too small for float32).
        n_power: power-iteration steps; 0 is random perturbation training (RPT).
        norm: ``"l2"`` (per sample, over all non-batch dimensions) or ``"linf"`` (sign of the direction).
        likelihood: ``"categorical"`` (softmax over the class dimension ``class_dim``, KL),
            ``"bernoulli"`` (sigmoid, per-output KL summed: binary and multi-label) or
            ``"gaussian"`` (half squared error, regression). Outputs with positions (``[B, C, H, W]``
            segmentation, ``[B, C, T]`` or ``[B, T, C]`` sequences) get one divergence per sample,
            summed over the positions, where a cross entropy is usually averaged over them: scale
            ``alpha`` down by the number of positions (or pass a ``divergence`` that averages) to
            keep the paper's balance.
        divergence: ``callable(clean, perturbed) -> Tensor[B]``; replaces ``likelihood``. It
            receives both outputs with the class dimension at 1 (``[B, C, *positions]``, whatever
            ``class_dim`` is) and the positions left out by ``output_mask`` set to 0 in both.
        probe: how :math:`H d` is computed: ``"finite_difference"`` (the paper's), ``"exact"`` (the
            Gauss-Newton product :math:`J^\top A J d`, exact at :math:`r=0`, accurate in low precision,
            about one extra forward pass of cost), or ``"auto"`` (default): finite differences in
            float32/float64, exact in bf16/fp16, under autocast to them, and when float32 runs in
            TF32 on CUDA (cuDNN convolutions by default; see
            :func:`torchvat.core.perturbation.resolve_probe`).
        input_key: the entry of a mapping ``x`` to perturb.
        output_fn: maps the model output to the prediction; by default a tensor is used as is, a
            mapping's ``"logits"``, an object's ``.logits``, or a tuple's first element.
        mask: 1 where the *input* may be perturbed, broadcast to the input (trailing dimensions
            added): a ``[B, T]`` attention mask keeps padded embeddings of ``[B, T, E]`` unperturbed.
            It does not leave outputs out of the loss: that is ``output_mask``.
        class_dim: the class dimension of the model's output: 1 (default; the PyTorch convention
            ``[B, C, ...]``, e.g. ``[B, C, H, W]`` segmentation) or -1 for ``[B, T, C]`` token
            classification and ``[B, T, V]`` language-model heads. The softmax (and everything
            else) is taken over it; the result equals that of ``class_dim=1`` on the output with
            that dimension moved to 1.
        output_mask: 1 where an output position counts, 0 where it is left out (padded tokens), of
            the output's shape without its class dimension (``[B, T]`` for ``[B, T, C]``; a ``[B]``
            mask keeps or leaves out whole samples). Left-out positions contribute nothing to the
            divergence, to the search's direction or to the gradient. ``None``: all positions count.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"`` over the batch.
        generator: generator for the random start (reproducible directions).
        rng: an :class:`RNGSnapshot` captured before the caller's clean pass; the probe and perturbed
            passes replay it, so dropout draws the same masks as in the clean pass. Without it the
            state at the call is replayed for every pass the call makes. It holds the generator of
            the input's device (and the CPU's): under ``nn.DataParallel`` the replicas on other GPUs
            draw new masks in every pass; use DistributedDataParallel, where each process replays
            its own.

    Shape:
        - x: [B, *] (or a mapping whose ``input_key`` entry is [B, *]).
        - output: [] for ``"mean"``/``"sum"``, [B] for ``"none"``.

    Returns:
        The LDS, differentiable with respect to the model parameters (and ``x``) through the
        perturbed pass only.

    Warns:
        TargetMismatchWarning: on the first call with ``logits`` for a model with BatchNorm in
            training mode, when the logits differ from the model's own clean pass on ``x`` (one
            no-grad check pass, replaying ``rng``; it consumes no random state and changes
            nothing): the target then comes from a pass with another batch composition.
        RuntimeWarning: on the first bf16/fp16 call for a model whose BatchNorm layers in
            training mode normalize over fewer than 16 values per channel, where the direction
            depends on the low-precision rounding of the model itself (BENCHMARKS.md section 1).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
        >>> x = torch.randn(8, 2)
        >>> logits = model(x)
        >>> loss = torch.nn.functional.cross_entropy(logits, torch.zeros(8, dtype=torch.long))
        >>> lds = vat_loss(model, x, logits=logits, eps=0.5)
        >>> (loss + 1.0 * lds).backward()
        >>> bool(lds > 0)
        True

    References:
        T. Miyato, S. Maeda, M. Koyama, S. Ishii. Virtual Adversarial Training: a Regularization
        Method for Supervised and Semi-Supervised Learning. IEEE TPAMI 41(8), 2019 (arXiv:1704.03976).
    """
    check_grad_mode("vat_loss")
    check_common(eps, xi, n_power, norm, probe)
    check_choice("reduction", reduction, REDUCTIONS)
    div = resolve_divergence(likelihood, divergence)
    output_fn = OutputLayout(class_dim, output_mask).output_fn(output_fn)
    inp = ModelInput(x, input_key)
    m = broadcast_mask(mask, inp.tensor)
    replays = rng is not None
    rng = rng if rng is not None else RNGSnapshot.capture(inp.tensor.device)
    with running_stats_guard(model):
        probe = resolve_probe(probe, inp.tensor, model)  # type: ignore[assignment]
        reuse = _reuses_probe_pass(logits, eps, n_power, probe)
        target = None if reuse else clean_target(model, inp, logits, output_fn, rng, replays)
        source = "logits" if logits is not None else _MODEL_OUTPUT
        if target is not None and not isinstance(eps, Tensor) and eps == 0:
            return reduce(
                torch.zeros(
                    target.shape[0],
                    device=target.device,
                    dtype=torch.promote_types(target.dtype, torch.float32),
                ),
                reduction,
            )
        with low_precision_batchnorm_check(model, inp.tensor, "vat_loss"):
            r, target = _search(
                model,
                inp,
                target,
                eps=eps,
                xi=xi,
                n_power=n_power,
                norm=norm,
                likelihood=likelihood,
                divergence=divergence,
                probe=probe,
                output_fn=output_fn,
                mask=m,
                generator=generator,
                rng=rng,
                source=source,
            )
        with rng.replay():
            pred = extract_output(inp.call(model, inp.tensor + r), output_fn)
    check_same_shape(target, pred, source)
    lds = checked_divergence(div, target, pred).clamp_min(0.0)
    return reduce(lds, reduction)


class VATLoss(EpsModule):
    """Module twin of :func:`vat_loss`: stores the hyperparameters; ``forward`` is one call.

    A tensor ``eps`` is registered as a buffer: it is in ``state_dict`` and follows ``.to()``.

    Args:
        eps: Perturbation size (see :func:`vat_loss`, as for every argument here).
        xi: Finite-difference step of the probe, or ``"auto"``.
        n_power: Power-iteration steps.
        norm: ``"l2"`` or ``"linf"``.
        likelihood: The model output's likelihood.
        divergence: A divergence replacing the likelihood's.
        probe: How the curvature product is taken.
        input_key: The entry of a mapping input to perturb.
        output_fn: Extracts the prediction from the model's output.
        class_dim: The class dimension of the output.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Example:
        >>> criterion = VATLoss(eps=1.0)
        >>> model = torch.nn.Linear(4, 3)
        >>> criterion(model, torch.randn(6, 4)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        eps: float | Tensor = 1.0,
        xi: float | Tensor | str = "auto",
        n_power: int = 1,
        norm: Norm = "l2",
        likelihood: str = "categorical",
        divergence: Divergence | None = None,
        probe: Probe = "auto",
        input_key: str | None = None,
        output_fn: Callable[[Any], Tensor] | None = None,
        class_dim: int = 1,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        check_common(eps, xi, n_power, norm, probe)
        check_class_dim(class_dim)
        check_choice("reduction", reduction, REDUCTIONS)
        resolve_divergence(likelihood, divergence)
        self.eps = eps
        self.xi, self.n_power, self.norm, self.class_dim = xi, n_power, norm, class_dim
        self.likelihood, self.divergence, self.probe = likelihood, divergence, probe
        self.input_key, self.output_fn, self.reduction = input_key, output_fn, reduction

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
        """Compute :func:`vat_loss` with the stored hyperparameters."""
        return vat_loss(
            model,
            x,
            logits=logits,
            eps=self.eps,
            xi=self.xi,
            n_power=self.n_power,
            norm=self.norm,
            likelihood=self.likelihood,
            divergence=self.divergence,
            probe=self.probe,
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
            f"eps={self.eps}, xi={self.xi!r}, n_power={self.n_power}, norm={self.norm!r}, "
            f"likelihood={self.likelihood!r}, probe={self.probe!r}"
            + (f", class_dim={self.class_dim}" if self.class_dim != 1 else "")
        )
