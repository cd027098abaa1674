r"""VAT and adversarial losses on the word embeddings, and the supervised term of :class:`VATTrainer`.

Each function is the core function (:func:`torchvat.vat_loss`, :func:`torchvat.adversarial_loss`,
:func:`torchvat.virtual_adversarial_perturbation`) on :func:`~torchvat.integrations.hf.embedding_batch`
with ``input_key="inputs_embeds"`` and the ``attention_mask`` as perturbation mask. Needs no
``transformers`` import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from torchvat.core import (
    RNGSnapshot,
    adversarial_loss,
    categorical_kl,
    vat_loss,
    virtual_adversarial_perturbation,
)
from torchvat.core._checks import REDUCTIONS, Reduction, check_choice, check_class_dim, extract_output
from torchvat.core.divergence import Divergence
from torchvat.core.perturbation import Norm, Probe, resolve_probe
from torchvat.integrations.hf.embeddings import _EMBEDS, IGNORE_INDEX, _transformers_model, embedding_batch

__all__ = [
    "TOKEN_LEVEL_HEADS",
    "hf_adversarial_loss",
    "hf_vat_loss",
    "hf_virtual_adversarial_perturbation",
    "labeled_rows",
    "supervised_cross_entropy",
    "symmetric_categorical_kl",
    "task_class_dim",
]


def _probe_attention(model: Any, inputs: Mapping[str, Any], probe: str) -> contextlib.AbstractContextManager:
    """The math SDPA backend when the probe resolves to exact, else a null context.

    The fused SDPA kernels have no forward-mode derivative and no double backward.
    """
    embeds = inputs.get(_EMBEDS)
    if isinstance(embeds, Tensor) and embeds.is_floating_point() and resolve_probe(probe, embeds, model) == "exact":
        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()


def _perturbation_mask(batch: Mapping[str, Any], mask: Tensor | None) -> Tensor | None:
    """``mask`` if given, else the batch's ``attention_mask`` (1 = real token, may be perturbed)."""
    return mask if mask is not None else batch.get("attention_mask")


#: endings of the class names of ``transformers`` heads that give one prediction per token
#: (logits ``[B, T, C]``): their class dimension is the last one
TOKEN_LEVEL_HEADS = ("ForTokenClassification", "ForCausalLM", "ForMaskedLM", "LMHeadModel")


def task_class_dim(model: Any) -> int:
    """The class dimension of the model's logits, from its task: -1 for a token-level head, else 1.

    A token-level head is a ``transformers`` model whose class name ends with one of
    :data:`TOKEN_LEVEL_HEADS` (``BertForTokenClassification``, ``GPT2LMHeadModel``, ...; looked
    for inside DDP/PEFT wrappers); its logits are ``[B, T, C]``. Every other model is taken as a
    sequence-level head, logits ``[B, C]`` (``*ForSequenceClassification``). Pass ``class_dim``
    to the functions of this module for other models.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification
        >>> cfg = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                  intermediate_size=16, max_position_embeddings=16)
        >>> task_class_dim(BertForTokenClassification(cfg)), task_class_dim(BertForSequenceClassification(cfg))
        (-1, 1)
    """
    hf_model = _transformers_model(model)
    name = type(hf_model if hf_model is not None else model).__name__
    return -1 if name.endswith(TOKEN_LEVEL_HEADS) else 1


def _layout(
    model: Any, batch: Mapping[str, Any], class_dim: int | None, output_mask: Tensor | None
) -> tuple[int, Tensor | None, bool]:
    """The class dimension, the output mask and whether the class dimension was taken from the task.

    For a token-level output the default output mask is the batch's ``attention_mask``: padded
    positions are left out.
    """
    auto = class_dim is None
    dim = task_class_dim(model) if class_dim is None else class_dim
    check_class_dim(dim)
    if output_mask is None and dim != 1:
        output_mask = batch.get("attention_mask")
    return dim, output_mask, auto


def _checked_output_fn(
    output_fn: Callable[[Any], Tensor] | None, batch: Mapping[str, Any], model: Any
) -> Callable[[Any], Tensor]:
    """``output_fn`` refusing a ``[B, T, C]`` output of a model taken as sequence-level (``class_dim`` from the task).

    Without the check the softmax would be taken over the positions, silently.
    """
    ids = batch.get("input_ids", batch.get(_EMBEDS))
    length = ids.shape[1] if isinstance(ids, Tensor) and ids.ndim >= 2 else None

    def checked(output: Any) -> Tensor:
        pred = extract_output(output, output_fn)
        if pred.ndim == 3 and pred.shape[1] == length:
            raise ValueError(
                f"class_dim must be given for {type(model).__name__}, whose logits {tuple(pred.shape)} have one "
                "row per token while its task is not known to be token-level (a class name ending with "
                f"{', '.join(TOKEN_LEVEL_HEADS)}): pass class_dim=-1 for [B, T, C] logits"
            )
        return pred

    return checked


def _positions(output_mask: Tensor | None, batch_size: int) -> Tensor | None:
    """The number of positions that count in each sequence, [B] (``None``: all of them, unknown here)."""
    if output_mask is None or output_mask.ndim < 2:
        return None
    return (output_mask.reshape(batch_size, -1) != 0).sum(1)


def _per_position(values: Tensor, output_mask: Tensor | None, length: int) -> Tensor:
    """Per-sample sums over positions [B] divided by each sample's number of positions that count (at least 1)."""
    counts = _positions(output_mask, values.shape[0])
    if counts is None:
        return values / length
    return values / counts.clamp_min(1).to(values.dtype)


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def symmetric_categorical_kl(clean: Tensor, perturbed: Tensor) -> Tensor:
    r"""Symmetric KL divergence between softmax distributions over dim 1 (SMART, Jiang et al. 2020).

    .. math:: D_s(z, \hat z) = \mathrm{KL}(p \,\Vert\, q) + \mathrm{KL}(q \,\Vert\, p),\quad
              p = \mathrm{softmax}(z),\ q = \mathrm{softmax}(\hat z)

    Pass it as ``divergence=`` to :func:`hf_vat_loss` (or any torchvat VAT function). Shapes:
    [B, C, ...] -> [B].

    Example:
        >>> z, w = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        >>> torch.allclose(symmetric_categorical_kl(z, w), categorical_kl(z, w) + categorical_kl(w, z))
        True
    """
    return categorical_kl(clean, perturbed) + categorical_kl(perturbed, clean)


def hf_virtual_adversarial_perturbation(
    model: Callable[..., Any],
    batch: Mapping[str, Any],
    *,
    logits: Any = None,
    eps: float | Tensor = 1.0,
    xi: float | Tensor | str = "auto",
    n_power: int = 1,
    norm: Norm = "l2",
    likelihood: str = "categorical",
    divergence: Divergence | None = None,
    probe: Probe = "auto",
    output_fn: Callable[[Any], Tensor] | None = None,
    mask: Tensor | None = None,
    class_dim: int | None = None,
    output_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    rng: RNGSnapshot | None = None,
) -> Tensor:
    """The virtual adversarial perturbation of the word embeddings, [B, T, H].

    Arguments as in :func:`hf_vat_loss`; this is the search alone (the model is left as found,
    parameter ``.grad`` included).

    Returns:
        Detached tensor of the shape of the word embeddings, zero at masked (padding) positions,
        with L2 norm ``eps`` over each sequence (``norm="l2"``).

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> cfg = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                  intermediate_size=16, max_position_embeddings=16)
        >>> model = BertForSequenceClassification(cfg)
        >>> batch = {"input_ids": torch.tensor([[5, 6, 0]]), "attention_mask": torch.tensor([[1, 1, 0]])}
        >>> r = hf_virtual_adversarial_perturbation(model, batch, eps=2.0)
        >>> round(r.norm().item(), 4), r[0, 2].abs().max().item()
        (2.0, 0.0)
    """
    inputs = embedding_batch(model, batch)
    class_dim, output_mask, auto = _layout(model, batch, class_dim, output_mask)
    if auto and class_dim == 1:
        output_fn = _checked_output_fn(output_fn, batch, model)
    with _probe_attention(model, inputs, probe):
        return virtual_adversarial_perturbation(
            model,
            inputs,
            logits=logits,
            eps=eps,
            xi=xi,
            n_power=n_power,
            norm=norm,
            likelihood=likelihood,
            divergence=divergence,
            probe=probe,
            input_key=_EMBEDS,
            output_fn=output_fn,
            mask=_perturbation_mask(batch, mask),
            class_dim=class_dim,
            output_mask=output_mask,
            generator=generator,
            rng=rng,
        )


def hf_vat_loss(
    model: Callable[..., Any],
    batch: Mapping[str, Any],
    *,
    logits: Any = None,
    eps: float | Tensor = 1.0,
    xi: float | Tensor | str = "auto",
    n_power: int = 1,
    norm: Norm = "l2",
    likelihood: str = "categorical",
    divergence: Divergence | None = None,
    probe: Probe = "auto",
    output_fn: Callable[[Any], Tensor] | None = None,
    mask: Tensor | None = None,
    class_dim: int | None = None,
    output_mask: Tensor | None = None,
    reduction: Reduction = "mean",
    generator: torch.Generator | None = None,
    rng: RNGSnapshot | None = None,
) -> Tensor:
    r"""Virtual adversarial loss on the word embeddings of a ``transformers`` model (Miyato et al. 2017).

    .. math::
        \mathrm{LDS}(s) = D\big[\,\mathrm{sg}\,p(y \mid e),\; p(y \mid e + r_{\mathrm{vadv}})\big],\qquad
        \lVert r_{\mathrm{vadv}} \rVert_2 = \epsilon,\ r_{\mathrm{vadv}} = 0 \text{ at padding}

    with :math:`e` the word embeddings [B, T, H] of the sequence :math:`s`, fed to the model as
    ``inputs_embeds`` (see :func:`word_embeddings`; the model adds position embeddings itself), and
    the norm taken over the whole embedded sequence. This is :func:`torchvat.vat_loss` with
    ``x = embedding_batch(model, batch)``, ``input_key="inputs_embeds"`` and the ``attention_mask``
    as perturbation mask. No label is used (``labels`` in ``batch`` is ignored): add
    ``alpha * hf_vat_loss(...)`` to the supervised loss for labeled and unlabeled batches alike.

    Token-level heads (``[B, T, C]`` logits, e.g. ``BertForTokenClassification``): the divergence
    is taken per token over its classes, and averaged over the tokens that count (not padding) of
    each sequence, so that it has the scale of the per-token cross entropy; adding the same number
    to every class's logit of a token changes nothing, and padded positions change nothing.

    To share the clean pass, compute ``inputs = embedding_batch(model, batch)`` and
    ``out = model(**inputs)`` yourself (after ``rng = RNGSnapshot.capture(device)``), then call
    ``hf_vat_loss(model, inputs, logits=out, rng=rng)``: the target is ``out``'s logits, detached,
    and dropout masks are replayed in the probe and perturbed passes.

    Args:
        model: a model whose ``forward`` accepts ``inputs_embeds`` (and the other entries of ``batch``).
        batch: model inputs holding ``input_ids`` or ``inputs_embeds``, optionally ``attention_mask``,
            ``token_type_ids``, ... (e.g. a collator's output).
        logits: the clean model output (any form with ``.logits``), if already computed on
            ``inputs_embeds``; detached. With the exact probe (``"auto"`` under bf16/fp16 autocast)
            the search runs on the math SDPA backend: compute these logits under
            ``torch.nn.attention.sdpa_kernel([SDPBackend.MATH])`` too, or a fused kernel's in-kernel
            attention dropout (CUDA) gives the clean pass other masks than the replayed ones.
        eps: L2 (or L-inf) size of the perturbation of each embedded sequence.
        xi: finite-difference step of the probe, ``"auto"`` or a number (see :func:`torchvat.vat_loss`).
        n_power: power-iteration steps (0: random perturbation training).
        norm: ``"l2"`` (over the whole embedded sequence) or ``"linf"`` (SMART-style).
        likelihood: ``"categorical"`` | ``"bernoulli"`` | ``"gaussian"`` (see :func:`torchvat.vat_loss`).
        divergence: ``callable(clean, perturbed) -> Tensor[B]`` replacing ``likelihood``;
            :func:`symmetric_categorical_kl` with ``norm="linf"`` gives the SMART-style regularizer.
        probe: ``"auto"`` | ``"finite_difference"`` | ``"exact"`` (see :func:`torchvat.vat_loss`); when it
            resolves to exact, the whole computation runs on the math SDPA backend (module docstring).
        output_fn: maps the model output to the prediction; default its ``.logits``.
        generator: generator for the random start of the power iteration.
        rng: an :class:`~torchvat.RNGSnapshot` captured before the caller's clean pass (dropout replay).
        mask: 1 where the embeddings may be perturbed, [B, T] (or [B, T, H]); default the batch's
            ``attention_mask`` (padding stays unperturbed), or everything when there is none. Pass
            e.g. ``attention_mask * (1 - special_tokens_mask)`` to keep special tokens fixed too.
        class_dim: the class dimension of the logits; ``None`` (default) takes it from the model's
            task (:func:`task_class_dim`): -1 for token-level heads (``*ForTokenClassification``,
            language-model heads: ``[B, T, C]`` logits, the softmax over the classes of each token),
            1 for sequence classifiers (``[B, C]``). A model of unknown task whose logits have one
            row per token is refused with a ``ValueError`` (the softmax would run over the positions).
        output_mask: 1 where an output position counts, [B, T] for token-level logits; default the
            batch's ``attention_mask`` for them (padded positions are left out), none for ``[B, C]``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"`` over the batch.

    Shape:
        - batch["input_ids"]: [B, T]; output: [] for ``"mean"``/``"sum"``, [B] for ``"none"``.

    Returns:
        The LDS, differentiable with respect to the parameters (embedding matrix included) through
        the perturbed pass.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> _ = torch.manual_seed(0)
        >>> cfg = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                  intermediate_size=16, max_position_embeddings=16, num_labels=2)
        >>> model = BertForSequenceClassification(cfg)
        >>> batch = {"input_ids": torch.randint(1, 50, (4, 6)), "attention_mask": torch.ones(4, 6, dtype=torch.long)}
        >>> lds = hf_vat_loss(model, batch, eps=1.0)
        >>> lds.backward()
        >>> bool(lds >= 0), model.bert.embeddings.word_embeddings.weight.grad is not None
        (True, True)

    References:
        T. Miyato, A. M. Dai, I. Goodfellow. Adversarial Training Methods for Semi-Supervised Text
        Classification. ICLR 2017 (arXiv:1605.07725).
    """
    check_choice("reduction", reduction, REDUCTIONS)
    inputs = embedding_batch(model, batch)
    class_dim, output_mask, auto = _layout(model, batch, class_dim, output_mask)
    if auto and class_dim == 1:
        output_fn = _checked_output_fn(output_fn, batch, model)
    with _probe_attention(model, inputs, probe):
        lds = vat_loss(
            model,
            inputs,
            logits=logits,
            eps=eps,
            xi=xi,
            n_power=n_power,
            norm=norm,
            likelihood=likelihood,
            divergence=divergence,
            probe=probe,
            input_key=_EMBEDS,
            output_fn=output_fn,
            mask=_perturbation_mask(batch, mask),
            class_dim=class_dim,
            output_mask=output_mask,
            reduction="none",
            generator=generator,
            rng=rng,
        )
    if class_dim != 1:  # one divergence per token, averaged over the tokens that count
        lds = _per_position(lds, output_mask, inputs[_EMBEDS].shape[1])
    return _reduce(lds, reduction)


def hf_adversarial_loss(
    model: Callable[..., Any],
    batch: Mapping[str, Any],
    labels: Any,
    *,
    logits: Any = None,
    eps: float | Tensor = 1.0,
    norm: Norm = "l2",
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    output_fn: Callable[[Any], Tensor] | None = None,
    mask: Tensor | None = None,
    class_dim: int | None = None,
    output_mask: Tensor | None = None,
    reduction: Reduction = "mean",
    rng: RNGSnapshot | None = None,
) -> Tensor:
    r"""Adversarial loss on the word embeddings (Goodfellow et al. 2015, for text as in Miyato et al. 2017).

    .. math::
        L_{\mathrm{adv}} = \ell\big(f(e + r_{\mathrm{adv}}), y\big),\qquad
        r_{\mathrm{adv}} = \epsilon\, \overline{\nabla_e \ell(f(e), y)},\ r_{\mathrm{adv}} = 0 \text{ at padding}

    This is :func:`torchvat.adversarial_loss` on ``embedding_batch(model, batch)`` with
    ``input_key="inputs_embeds"`` and the ``attention_mask`` as perturbation mask. With the default
    cross entropy, rows labeled ``-100`` get a zero gradient, so no perturbation, and a zero loss
    (they still count in ``reduction="mean"``; use ``"none"`` to average over labeled rows only).
    When ``batch`` holds ``inputs_embeds`` that require grad and ``logits`` were computed from them
    (with their graph), the input gradient is taken through that graph, saving a forward pass.

    Args:
        model: a model whose ``forward`` accepts ``inputs_embeds``.
        batch: model inputs holding ``input_ids`` or ``inputs_embeds`` (``labels`` is ignored).
        labels: class indices [B] (``-100`` = unlabeled), or what ``loss_fn`` accepts.
        logits: the clean model output, if already computed on ``inputs_embeds``.
        eps: L2 (or L-inf) size of the perturbation of each embedded sequence.
        norm: ``"l2"`` (normalized gradient) or ``"linf"`` (its sign).
        loss_fn: ``loss_fn(logits, labels)`` returning per-sample losses; cross entropy by default.
        output_fn: maps the model output to the prediction; default its ``.logits``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"`` over the batch.
        rng: an :class:`~torchvat.RNGSnapshot` captured before the clean pass (dropout replay).
        mask: as in :func:`hf_vat_loss` (default: the ``attention_mask``).
        class_dim: as in :func:`hf_vat_loss` (default: from the model's task). For token-level
            logits ``labels`` is [B, T] (``-100`` = ignored token) and each sequence's loss is the
            mean over its labeled, non-padded tokens.
        output_mask: as in :func:`hf_vat_loss`; with the default cross entropy and [B, T] labels,
            the tokens labeled ``-100`` are left out too.

    Returns:
        The loss on the adversarial embeddings; differentiable with respect to the parameters.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> _ = torch.manual_seed(0)
        >>> cfg = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                  intermediate_size=16, max_position_embeddings=16, num_labels=2)
        >>> model = BertForSequenceClassification(cfg).eval()
        >>> batch = {"input_ids": torch.randint(1, 50, (4, 6))}
        >>> y = torch.tensor([0, 1, 0, 1])
        >>> clean = torch.nn.functional.cross_entropy(model(**batch).logits, y)
        >>> bool(hf_adversarial_loss(model, batch, y, eps=1.0) > clean)
        True
    """
    inputs = embedding_batch(model, batch)
    class_dim, output_mask, auto = _layout(model, batch, class_dim, output_mask)
    if auto and class_dim == 1:
        output_fn = _checked_output_fn(output_fn, batch, model)
    if class_dim != 1 and loss_fn is None and isinstance(labels, Tensor) and labels.ndim == 2:
        # the per-sample mean over the labeled tokens (-100 = ignored token) that are not padding
        labeled = labels != IGNORE_INDEX
        output_mask = labeled if output_mask is None else (output_mask.to(labeled.device) != 0) & labeled
    return adversarial_loss(
        model,
        inputs,
        labels,
        logits=logits,
        eps=eps,
        norm=norm,
        loss_fn=loss_fn,
        input_key=_EMBEDS,
        output_fn=output_fn,
        mask=_perturbation_mask(batch, mask),
        class_dim=class_dim,
        output_mask=output_mask,
        reduction=reduction,
        rng=rng,
    )


def _zero(like: Tensor) -> Tensor:
    """A (positive) zero scalar that keeps ``like``'s graph (backward through it gives zero gradients)."""
    return like.sum() * 0.0 + 0.0  # -0.0 + 0.0 == +0.0: a negative sum would give -0.0


def supervised_cross_entropy(logits: Tensor, labels: Tensor | None) -> Tensor:
    """Mean cross entropy over the labels that are not ``-100``; a (graph-keeping) zero if none.

    For a sequence classifier, the mean over the labeled rows; for a token classifier (``[B, T, C]``
    logits, ``[B, T]`` labels), the mean over the labeled tokens of the batch, as ``transformers``'
    token-classification loss takes it (``-100`` marks special, padding and unlabeled tokens).

    Args:
        logits: [B, C] class scores, or [B, T, C] (one row of class scores per token).
        labels: [B] (or [B, T]) class indices, ``-100`` for unlabeled rows (tokens), or ``None``.

    Example:
        >>> z = torch.tensor([[0.0, 0.0], [5.0, 0.0]])
        >>> round(supervised_cross_entropy(z, torch.tensor([1, -100])).item(), 4)
        0.6931
        >>> supervised_cross_entropy(-z, torch.tensor([-100, -100])).item()
        0.0
        >>> round(supervised_cross_entropy(z[None], torch.tensor([[1, -100]])).item(), 4)  # tokens
        0.6931
    """
    if labels is None:
        return _zero(logits)
    _check_labels(labels, logits)
    if logits.ndim == 3:
        logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    n = (labels != IGNORE_INDEX).sum()
    if int(n) == 0:
        return _zero(logits)
    ce = F.cross_entropy(
        logits.to(torch.promote_types(logits.dtype, torch.float32)), labels, ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return ce / n


def labeled_rows(labels: Tensor) -> Tensor:
    """Which rows (sequences) are labeled, [B] bool: a row with at least one label other than ``-100``.

    For a sequence classifier (labels [B]) an unlabeled row is labeled ``-100``. For a token
    classifier (labels [B, T]) ``-100`` also marks the tokens without a label of a labeled
    sequence (special tokens, sub-words after the first, padding): **an unlabeled sequence is one
    whose tokens are all labeled -100**. It gets the VAT term only; a sequence with at least one
    labeled token is labeled (its other tokens enter no supervised or AT term).

    Example:
        >>> labeled_rows(torch.tensor([[-100, 2, -100], [-100, -100, -100]])).tolist()
        [True, False]
    """
    labeled = labels != IGNORE_INDEX
    return labeled.reshape(labeled.shape[0], -1).any(1) if labeled.ndim > 1 else labeled


def _check_labels(labels: Any, logits: Tensor) -> None:
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.is_complex():
        got = f"dtype {labels.dtype}" if isinstance(labels, Tensor) else type(labels).__name__
        raise TypeError(
            "labels must be an integer tensor of class indices (-100 = unlabeled), got "
            f"{got}; override VATTrainer.supervised_loss for other targets"
        )
    expected = logits.shape[:-1] if logits.ndim == 3 else logits.shape[:1]
    if labels.shape != expected:
        what = "one class index per token" if logits.ndim == 3 else "one class index per row"
        raise ValueError(f"labels must have shape {list(expected)} ({what}), got {tuple(labels.shape)}")


def _masked_mean(values: Tensor, rows: Tensor) -> Tensor:
    """Mean of ``values`` [B] over the rows where ``rows`` [B] is True (the caller ensures one)."""
    w = rows.to(values.dtype)
    return (values * w).sum() / w.sum()
