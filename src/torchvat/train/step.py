"""One training step's forward half: the clean passes, the method's terms and their weighted sum.

Shared by :class:`~torchvat.train.Trainer` (which adds the backward, the non-finite check and
the optimizer step) and the Lightning integration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from torchvat import params
from torchvat.core import RNGSnapshot
from torchvat.core.guards import guarded_module, running_stats_guard
from torchvat.train.batch_statistics import (
    BatchStatistics,
    captured_batch_statistics,
    has_shared_statistics,
    normalized_with,
)
from torchvat.train.defaults import DEFAULT_LABELED_STATS
from torchvat.train.methods import Batch, CleanPass, Method

__all__ = ["check_logits", "compute_method_loss"]


def check_logits(logits: Any, n_rows: int) -> None:
    """The model's output must be a tensor with one row per input row."""
    if not isinstance(logits, Tensor):
        raise TypeError(
            "the model must return a logits tensor [B, n_classes], got "
            f"{type(logits).__name__}; wrap a model that returns a dict, a tuple or a Hugging Face "
            "output in a module whose forward returns the logits (e.g. model(x).logits)"
        )
    if logits.ndim == 0 or logits.shape[0] != n_rows:
        raise ValueError(
            f"the model must return one row of logits per input row, got shape {tuple(logits.shape)} for {n_rows} rows"
        )


def compute_method_loss(
    model: nn.Module,
    method: Method,
    batch: Batch,
    weights: Mapping[str, float],
    *,
    generator: torch.Generator | None = None,
    on_clean: Callable[[CleanPass], None] | None = None,
    labeled_stats: str = DEFAULT_LABELED_STATS,
) -> tuple[Tensor, dict[str, Tensor], CleanPass]:
    """The clean passes, the method's terms and their weighted sum for one batch (no backward).

    This is the forward half of :meth:`Trainer.train_step`, shared with the Lightning
    integration: the clean passes cover every row once (one joint pass, or labeled and
    unlabeled passes, as the method asks); the random state is captured before each so the
    method's probe and perturbed passes replay the same dropout masks.

    BatchNorm's running statistics, which the model is evaluated with, are updated by the pass
    the cross entropy is fitted under: the joint pass, or the labeled pass alone. The separate
    unlabeled pass normalizes with its own batch's statistics (the target of its rows' search
    comes from a pass with the batch composition of the perturbed passes) and leaves the running
    statistics as they are, as the VAT authors' code does (takerum/vat_tf ``train_semisup.py``,
    ``build_training_graph``: ``forward(ul_x, is_training=True, update_batch_stats=False)``).
    Letting it update them evaluates the network with statistics its supervised term never saw:
    with 50 labels on standardized digits, VAT fell 18 points below supervised training on average
    (BENCHMARKS.md section 6). With ``labeled_stats="unlabeled"`` the unlabeled pass runs first,
    updates the running statistics, and the labeled pass is normalized with its statistics
    (:mod:`torchvat.train.batch_statistics`): the cross entropy is then fitted under them too.

    Args:
        model: The model to call (possibly compiled or DDP-wrapped), in training mode.
        method: The training method.
        batch: The batch, on the model's device.
        weights: Weight of each term (e.g. :meth:`Trainer.loss_weights`).
        generator: Generator for the method's random draws (random starts).
        on_clean: Called with the clean pass before the method's terms are computed (the
            trainer checks the labels against the number of outputs there).
        labeled_stats: With separate passes, the BatchNorm statistics the labeled rows are
            normalized with: ``"own"`` (their batch's; the running statistics follow the labeled
            pass) or ``"unlabeled"`` (the unlabeled batch's, whose pass then runs first and
            updates the running statistics; :mod:`torchvat.train.batch_statistics`).

    Returns:
        ``(loss, terms, clean)``: the weighted sum, the named terms and the clean pass.

    Raises:
        ValueError: If the method returns a term that has no weight.

    Example:
        >>> from torchvat.train import get_method
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
        >>> method = get_method("vat", eps=0.5)
        >>> batch = Batch(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), torch.randn(16, 2))
        >>> loss, terms, clean = compute_method_loss(model, method, batch, method.weights)
        >>> sorted(terms), clean.separate
        (['ce', 'vat'], True)
    """
    n_labeled = batch.x_labeled.shape[0]
    device = batch.x_labeled.device
    joint = batch.x_unlabeled is not None and method.joint_clean_pass
    x = torch.cat([batch.x_labeled, batch.x_unlabeled]) if batch.x_unlabeled is not None and joint else batch.x_labeled
    if method.needs_input_grad:
        x = x.detach().requires_grad_(True)

    # Clean passes: every row once. The generator state is captured before each pass so the
    # method's probe and perturbed passes replay the same dropout masks. A search's target
    # comes from a pass with the batch composition of its perturbed passes (BatchNorm).
    params.check("labeled_stats", labeled_stats)
    separate = batch.x_unlabeled is not None and not joint
    shared: BatchStatistics = {}
    clean_unlabeled: tuple[RNGSnapshot, Tensor] | None = None
    module = guarded_module(model) if separate and labeled_stats == "unlabeled" else None
    if module is not None and has_shared_statistics(module):
        # The unlabeled pass first: it normalizes with its own batch's statistics (the target of its
        # rows' search comes from a pass with the batch composition of the perturbed passes) and
        # updates the running statistics; the labeled pass is normalized with the same statistics
        assert batch.x_unlabeled is not None
        unlabeled_rng = RNGSnapshot.capture(device)
        # with its graph: the cross entropy reaches the weights through the statistics too
        with captured_batch_statistics(module) as captured:
            unlabeled_logits = model(batch.x_unlabeled)
        shared = captured
        if not method.needs_unlabeled_grad and isinstance(unlabeled_logits, Tensor):
            unlabeled_logits = unlabeled_logits.detach()
        clean_unlabeled = (unlabeled_rng, unlabeled_logits)
    rng = RNGSnapshot.capture(device)
    with normalized_with(shared):
        logits = model(x)
    check_logits(logits, x.shape[0])
    clean = CleanPass(x=x, logits=logits, n_labeled=n_labeled, rng=rng, generator=generator)
    if separate and clean_unlabeled is None:
        # Normalized with its own batch statistics (the target of the unlabeled rows' search), but
        # the running statistics stay those of the passes the cross entropy is fitted under
        assert batch.x_unlabeled is not None
        unlabeled_rng = RNGSnapshot.capture(device)
        with torch.set_grad_enabled(method.needs_unlabeled_grad), running_stats_guard(model):
            clean_unlabeled = (unlabeled_rng, model(batch.x_unlabeled))
    if clean_unlabeled is not None:
        assert batch.x_unlabeled is not None
        check_logits(clean_unlabeled[1], batch.x_unlabeled.shape[0])
        clean.unlabeled_rng, clean.unlabeled_logits = clean_unlabeled
        clean.unlabeled_x = batch.x_unlabeled
    if on_clean is not None:
        on_clean(clean)
    # the method's perturbation search and perturbed pass -> named loss terms
    terms = method.loss_terms(model, batch, clean)
    unknown = sorted(set(terms) - set(weights))
    if unknown:
        raise ValueError(
            f"method {method.name!r} returned terms {unknown} without a weight; its weights are {method.weights}"
        )
    loss: Tensor = sum(weights[name] * term for name, term in terms.items())  # type: ignore[assignment]
    return loss, terms, clean
