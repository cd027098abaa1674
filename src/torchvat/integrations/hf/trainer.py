"""``VATTrainer``: a ``transformers.Trainer`` whose loss adds VAT and/or AT on the word embeddings.

This module imports ``transformers`` (the ``[hf]`` extra); :mod:`torchvat.integrations.hf` and
:mod:`torchvat.integrations` re-export :class:`VATTrainer` on first access, so that importing them
does not.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

try:
    from transformers import Trainer
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "torchvat.integrations.hf.VATTrainer needs the transformers package: pip install 'torchvat[hf]'"
    ) from err

from torchvat.core import RNGSnapshot
from torchvat.core._checks import extract_output
from torchvat.integrations.hf.arguments import VATArguments
from torchvat.integrations.hf.embeddings import _EMBEDS, embedding_batch
from torchvat.integrations.hf.losses import (
    TOKEN_LEVEL_HEADS,
    _masked_mean,
    _probe_attention,
    hf_adversarial_loss,
    hf_vat_loss,
    labeled_rows,
    supervised_cross_entropy,
    symmetric_categorical_kl,
    task_class_dim,
)

__all__ = ["VATTrainer"]


def _checkpointing(model: Any) -> tuple[bool, bool]:
    """Whether gradient (activation) checkpointing is on in ``model``, and whether any of it is reentrant.

    ``transformers`` sets ``gradient_checkpointing`` on the checkpointed modules and their
    ``_gradient_checkpointing_func`` to ``functools.partial(checkpoint, **kwargs)``; without an explicit
    ``use_reentrant=False`` there, ``torch.utils.checkpoint`` defaults to reentrant.
    """
    on = reentrant = False
    for m in model.modules() if isinstance(model, nn.Module) else ():
        if getattr(m, "gradient_checkpointing", False) is True:
            on = True
            options = getattr(getattr(m, "_gradient_checkpointing_func", None), "keywords", None) or {}
            reentrant = reentrant or options.get("use_reentrant", True) is not False
    return on, reentrant


def _requested_checkpointing(args: Any) -> tuple[bool, bool]:
    """Whether ``TrainingArguments`` ask for gradient checkpointing, and explicitly for the reentrant kind.

    ``activation_checkpointing*`` in newer ``transformers``, ``gradient_checkpointing*`` before (an
    unset ``use_reentrant`` is only known once the model is checkpointed: :func:`_checkpointing`).
    """
    on = getattr(args, "activation_checkpointing", None) or getattr(args, "gradient_checkpointing", False)
    options = getattr(args, "activation_checkpointing_kwargs", None) or getattr(
        args, "gradient_checkpointing_kwargs", None
    )
    return bool(on), isinstance(options, Mapping) and options.get("use_reentrant") is True


def _check_checkpointing(vat_args: VATArguments, reentrant: bool) -> None:
    """Raise unless gradient checkpointing is non-reentrant and VAT (if on) uses the finite-difference probe."""
    if reentrant:
        raise ValueError(
            "gradient_checkpointing (activation_checkpointing) must be non-reentrant with VATTrainer, got "
            "use_reentrant=True (or unset, torch.utils.checkpoint's default): the perturbation searches take "
            "input gradients with torch.autograd.grad, which reentrant checkpointing does not support; pass "
            "gradient_checkpointing_kwargs={'use_reentrant': False} (activation_checkpointing_kwargs in newer "
            "transformers), or turn checkpointing off"
        )
    if vat_args.uses_vat and vat_args.probe != "finite_difference":
        raise ValueError(
            "VATArguments.probe must be 'finite_difference' with gradient_checkpointing (activation_checkpointing), "
            f"got {vat_args.probe!r}: the exact probe ('auto' picks it in bf16/fp16) takes a forward-mode "
            "derivative or a double backward, which fails under torch.utils.checkpoint; or turn checkpointing off "
            "(a smaller per_device_train_batch_size with gradient_accumulation_steps also saves memory)"
        )


class VATTrainer(Trainer):
    r"""A ``transformers.Trainer`` whose loss adds VAT and/or AT on the word embeddings.

    .. math::
        L = \frac{1}{|\mathcal{L}|}\sum_{i \in \mathcal{L}} \ell(f(e_i), y_i)
            + \alpha\, \frac{1}{|\mathcal{V}|}\sum_{i \in \mathcal{V}} \mathrm{LDS}(e_i)
            + \alpha_{\mathrm{at}}\, \frac{1}{|\mathcal{L}|}\sum_{i \in \mathcal{L}} L_{\mathrm{adv}}(e_i, y_i)

    with :math:`\mathcal{L}` the labeled rows of the batch (``labels != -100``) and
    :math:`\mathcal{V}` all rows (``regularize="all"``) or the unlabeled ones. Semi-supervised use:
    put the unlabeled examples in the training set with label ``-100``; they get only the VAT
    term. Sequence classifiers (logits [B, C], labels [B]) and token classifiers
    (``*ForTokenClassification``: logits [B, T, C], labels [B, T]) are handled; for a token
    classifier :math:`\ell` is the mean cross entropy over the labeled tokens, the VAT and AT
    terms are per-token means over a sequence's non-padded (and, for AT, labeled) tokens, and
    **an unlabeled sequence is one whose tokens are all labeled -100** (``-100`` also marks the
    special tokens and continuation sub-words of a labeled sequence; see
    :func:`~torchvat.integrations.hf.labeled_rows`). Override :meth:`supervised_loss` for other
    targets.

    One step: the word embeddings :math:`e` are computed once; an :class:`~torchvat.RNGSnapshot`
    is captured; one clean pass ``model(inputs_embeds=e, ...)`` gives the supervised loss and
    the detached VAT target (``logits=``), and its graph serves AT's input gradient; the
    perturbation searches replay the snapshot, so dropout draws the clean pass's masks. VAT is
    computed over the whole batch (reduction ``"none"``) and averaged over
    :math:`\mathcal{V}`, so the replayed dropout masks match the clean pass row for row.

    The returned loss is a per-batch mean: ``num_items_in_batch`` is ignored and the
    ``Trainer`` divides by the gradient accumulation steps. In evaluation (``model.training``
    false) the loss is the supervised term only.

    The terms are named as the engine names them (:mod:`torchvat.train.methods`): ``"ce"`` (the
    supervised term), ``"vat"`` and ``"at"``, and logged as ``loss_ce``, ``loss_vat`` and
    ``loss_at`` beside the ``Trainer``'s ``loss``. Each is averaged over the same training
    batches as ``loss`` (all of them since the last log; a batch without the term, e.g. without
    labeled rows for ``ce`` and ``at``, counts as 0, as it does in ``loss``), so the logged terms
    add up: ``loss = loss_ce + alpha * loss_vat + at_alpha * loss_at`` (the ``Trainer`` rounds
    ``loss`` to 4 decimals, the terms keep 6 significant digits). ``loss_ce`` is therefore not the
    mean cross entropy of the labeled batches when some batches have no labeled row: it is that
    mean times the share of batches with labeled rows. Multi-process (DDP) training is not
    tested: the search makes several forward passes per backward pass.

    Mixed precision (``bf16``/``fp16``): the whole loss (searches included) runs under the
    accelerator's autocast, so the probe resolves as for the model's own passes (``"auto"``:
    exact). With ``return_dict=False`` models the returned outputs are
    ``(loss.detach(), *outputs)``, as ``Trainer.prediction_step`` expects. Gradient (activation)
    checkpointing works only non-reentrant (``gradient_checkpointing_kwargs={"use_reentrant":
    False}``) and, with VAT, with ``probe="finite_difference"`` (the exact probe's forward-mode
    derivative or double backward fails under ``torch.utils.checkpoint``); a ``ValueError`` says
    so on construction or at the first training step.

    Args:
        *args: passed to ``transformers.Trainer``.
        vat_args: the hyperparameters (:class:`VATArguments`); default ``VATArguments()``.
        **kwargs: passed to ``transformers.Trainer``.
    """

    # the loss is a per-batch mean, not normalized by ``num_items_in_batch``
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, vat_args: VATArguments | None = None, **kwargs: Any) -> None:
        if vat_args is None:
            vat_args = VATArguments()
        if not isinstance(vat_args, VATArguments):
            raise TypeError(f"vat_args must be a VATArguments or None, got {type(vat_args).__name__}")
        self.vat_args = vat_args
        super().__init__(*args, **kwargs)
        # the supervised term is supervised_loss's: options of Trainer's own loss would be ignored
        if getattr(self, "compute_loss_func", None) is not None:
            raise ValueError(
                "VATTrainer computes its supervised term with supervised_loss; override that method "
                "instead of passing compute_loss_func"
            )
        if getattr(self.args, "label_smoothing_factor", 0.0):
            raise ValueError(
                f"label_smoothing_factor={self.args.label_smoothing_factor} is not applied by VATTrainer's "
                "supervised term (mean cross entropy over labeled rows); set it to 0 or override supervised_loss"
            )
        requested, reentrant = _requested_checkpointing(self.args)
        on, model_reentrant = _checkpointing(self.model)
        if requested or on:
            _check_checkpointing(vat_args, reentrant or model_reentrant)
        # the training step must divide the per-batch mean by the accumulation steps (all versions)
        self.model_accepts_loss_kwargs = False
        self.last_loss_terms: dict[str, Tensor] = _Terms()
        self._term_sums: dict[str, Tensor] = {}
        self._term_batches = 0  # training batches since the last log: what every logged term averages over

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model as ``Trainer.save_model`` does, and the :class:`VATArguments` beside it."""
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.args.should_save:
            folder = output_dir if output_dir is not None else self.args.output_dir
            if folder is not None:  # Trainer.save_model saved nowhere either
                self.vat_args.save(folder)

    @property
    def label_key(self) -> str:
        """The batch entry holding the labels (the single ``label_names`` entry, else ``"labels"``)."""
        names = getattr(self, "label_names", None)
        return names[0] if names and len(names) == 1 else "labels"

    def supervised_loss(self, logits: Tensor, labels: Tensor | None) -> Tensor:
        """The supervised term: mean cross entropy over labeled rows or tokens (override for other targets).

        Args:
            logits: clean logits [B, C] (or [B, T, C] for a token classifier).
            labels: [B] (or [B, T]) class indices (``-100`` = unlabeled) or ``None``.
        """
        return supervised_cross_entropy(logits, labels)

    def compute_loss_terms(self, model: Any, inputs: Mapping[str, Any]) -> tuple[dict[str, Tensor], Any]:
        """The named, unweighted loss terms of one batch, and the clean model output.

        Args:
            model: the (possibly wrapped) model.
            inputs: the collated batch, with ``input_ids`` and labels under :attr:`label_key`.

        Returns:
            ``({"ce": ..., "vat": ..., "at": ...}, outputs)``; ``"vat"``/``"at"`` only
            when computed (training mode, positive weight, rows to apply them to). The supervised
            term is ``"ce"``, the engine's name; reading it as ``terms["supervised"]`` (its name in
            earlier versions) still works, with a ``DeprecationWarning``.

        Everything runs under the accelerator's autocast (``bf16``/``fp16``), as the model's
        own passes do, so that the probe and ``xi`` resolve for the precision they run in.
        """
        accelerator = getattr(self, "accelerator", None)
        with accelerator.autocast() if accelerator is not None else contextlib.nullcontext():
            return self._loss_terms(model, inputs)

    def _loss_terms(self, model: Any, inputs: Mapping[str, Any]) -> tuple[dict[str, Tensor], Any]:
        """:meth:`compute_loss_terms` without the autocast context."""
        if model.training:
            on, reentrant = _checkpointing(model)
            if on:
                _check_checkpointing(self.vat_args, reentrant)
        inputs = dict(inputs)
        labels = inputs.pop(self.label_key, None)
        batch = embedding_batch(self.accelerator.unwrap_model(model), inputs)
        embeds = batch[_EMBEDS]
        rng = RNGSnapshot.capture(embeds.device)
        # the clean pass on the attention backend of the search's passes: a fused SDPA kernel
        # draws its dropout mask inside the kernel, so replaying the random state under the math
        # backend would not give the clean pass's masks (CUDA), and the two round differently
        backend: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if model.training and self.vat_args.uses_vat:
            backend = _probe_attention(model, batch, self.vat_args.probe)
        with backend:
            outputs = model(**batch)
        logits = extract_output(outputs, None)
        class_dim = task_class_dim(model)
        if logits.ndim != (3 if class_dim == -1 else 2):
            raise ValueError(
                f"VATTrainer handles sequence classifiers (logits [B, C]) and token classifiers (logits [B, T, C], "
                f"a model class name ending with {', '.join(TOKEN_LEVEL_HEADS)}); got logits of shape "
                f"{tuple(logits.shape)} from {type(model).__name__}: use hf_vat_loss with class_dim= for other heads"
            )
        terms = _Terms(ce=self.supervised_loss(logits, labels))
        if not model.training:
            return terms, outputs
        a = self.vat_args
        n = logits.shape[0]
        # a labeled sequence has a label other than -100 (for a token classifier: on one of its tokens)
        labeled = labeled_rows(labels) if labels is not None else torch.zeros(n, dtype=torch.bool, device=logits.device)
        if a.uses_vat:
            rows = ~labeled if a.regularize == "unlabeled" else torch.ones_like(labeled)
            if bool(rows.any()):
                lds = hf_vat_loss(
                    model,
                    batch,
                    logits=logits,
                    eps=a.eps,
                    xi=a.xi,
                    n_power=a.n_power,
                    norm=a.norm,  # type: ignore[arg-type]
                    divergence=symmetric_categorical_kl if a.divergence == "symmetric_kl" else None,
                    probe=a.probe,  # type: ignore[arg-type]
                    class_dim=class_dim,
                    reduction="none",
                    rng=rng,
                )
                terms["vat"] = _masked_mean(lds, rows)
        if a.uses_at and bool(labeled.any()):
            mask = batch.get("attention_mask")
            row_mask = labeled.to(embeds.dtype)
            mask = row_mask[:, None] if mask is None else mask.to(embeds.dtype) * row_mask[:, None]
            adv = hf_adversarial_loss(
                model,
                batch,
                labels,
                logits=logits,
                eps=a.eps if a.at_eps is None else a.at_eps,
                norm=a.norm,  # type: ignore[arg-type]
                mask=mask,
                class_dim=class_dim,
                reduction="none",
                rng=rng,
            )
            terms["at"] = _masked_mean(adv, labeled)
        return terms, outputs

    def combine_loss_terms(self, terms: Mapping[str, Tensor]) -> Tensor:
        """The weighted sum: ce + ``alpha`` * vat + ``at_alpha`` * at.

        A term named ``"supervised"`` (by an override of :meth:`compute_loss_terms` written for
        earlier versions) is taken as ``"ce"``, with a ``DeprecationWarning``.
        """
        terms = _current_terms(terms)
        weights = {"ce": 1.0, "vat": self.vat_args.alpha, "at": self.vat_args.at_alpha}
        unknown = sorted(set(terms) - set(weights))
        if unknown:
            raise ValueError(f"loss terms must be among {sorted(weights)}, got {unknown}; override combine_loss_terms")
        first = next(iter(terms.values()))
        return sum((weights[k] * v for k, v in terms.items()), start=torch.zeros(()).to(first))

    def compute_loss(
        self,
        model: Any,
        inputs: Mapping[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> Tensor | tuple[Tensor, Any]:
        """Supervised loss plus the weighted VAT/AT terms (see the class docstring).

        ``num_items_in_batch`` (newer ``transformers``) and other keyword arguments are accepted
        and ignored: the loss is a per-batch mean. With ``return_outputs``, a model output that is
        not a mapping (``return_dict=False``: ``(logits, ...)``) is returned as
        ``(loss.detach(), logits, ...)``, the layout ``Trainer.prediction_step`` reads.
        """
        del num_items_in_batch, kwargs
        given, outputs = self.compute_loss_terms(model, inputs)
        terms = _current_terms(given)
        loss = self.combine_loss_terms(terms)
        self.last_loss_terms = _Terms({k: v.detach() for k, v in terms.items()})
        if model.training:
            # every term is summed over every training batch (a batch without it adds 0, as to the
            # loss), on the device; the host reads the sums only when logging
            self._term_batches += 1
            for k, v in self.last_loss_terms.items():
                self._term_sums[k] = self._term_sums.get(k, 0.0) + v.float()
        if not return_outputs:
            return loss
        if not isinstance(outputs, Mapping):
            # return_dict=False: a tuple (logits, ...) without the loss (no labels were passed);
            # Trainer.prediction_step takes outputs[1:] as the predictions, as after a model's own loss
            outputs = (loss.detach(), *(outputs if isinstance(outputs, tuple | list) else (outputs,)))
        return loss, outputs

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Add each loss term's mean over the training batches since the last training log.

        The batches are those ``loss`` averages, a batch without the term counting 0, so
        ``loss = loss_ce + alpha * loss_vat + at_alpha * loss_at`` (see the class docstring); a
        term no batch had is not logged. The means are rounded to 6 significant digits (so a
        small term is not logged as 0).
        """
        if "loss" in logs and self._term_batches:
            for k, v in self._term_sums.items():
                logs[f"loss_{k}"] = float(f"{float(v) / self._term_batches:.6g}")
            self._term_sums, self._term_batches = {}, 0
        super().log(logs, *args, **kwargs)


class _Terms(dict):
    """The named loss terms; ``terms["supervised"]``, the supervised term's earlier name, reads ``"ce"`` (warned)."""

    def __missing__(self, key: str) -> Tensor:
        if key == "supervised" and "ce" in self:
            warnings.warn(
                "the supervised loss term is named 'ce' (the engine's name); terms['supervised'] is deprecated",
                DeprecationWarning,
                stacklevel=2,
            )
            return self["ce"]
        raise KeyError(key)


def _current_terms(terms: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """``terms`` with a term named ``"supervised"`` (earlier versions' name) renamed ``"ce"``, warned."""
    if "supervised" not in terms:
        return terms
    if "ce" in terms:
        raise ValueError("loss terms must not hold both 'ce' and its earlier name 'supervised'")
    warnings.warn(
        "the loss term 'supervised' is deprecated, name it 'ce' (the engine's name)", DeprecationWarning, stacklevel=3
    )
    return {("ce" if k == "supervised" else k): v for k, v in terms.items()}
