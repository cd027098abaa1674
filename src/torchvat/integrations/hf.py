r"""VAT and adversarial training on the word embeddings of Hugging Face ``transformers`` models.

Miyato, Dai & Goodfellow (2017) apply adversarial and virtual adversarial training to text by
perturbing the embedded sequence: the perturbation :math:`r` has the shape [B, T, H] of the word
embeddings, its L2 norm is taken over the whole sequence (all non-batch dimensions), and padding
positions are never perturbed (the ``attention_mask`` is the perturbation mask).

**Word embeddings only.** The perturbed tensor is the output of the model's input embedding layer,
``model.get_input_embeddings()(input_ids)``, fed back as ``inputs_embeds``; the model then adds
position and token-type embeddings (and applies its embedding LayerNorm and dropout) exactly as on
the ``input_ids`` path. Feeding back the output of the whole embedding *module* (e.g.
``model.bert.embeddings(input_ids)``, already holding position and token-type embeddings) would add
them twice, a defect of public VAT-for-BERT code; with a zero perturbation the logits here equal
those of ``model(input_ids=...)`` exactly, for the model families below.

**Which models.** The model's ``forward`` must accept ``inputs_embeds``, and the ``inputs_embeds``
path equals the ``input_ids`` path only where the model uses ``input_ids`` for nothing but the
embedding lookup, or for what :func:`embedding_batch` reproduces (checked at zero perturbation,
``transformers`` 5.24):

- BERT-style encoders (BERT, ALBERT, DistilBERT, ELECTRA, DeBERTa-v2, ...): exact as they are.
- Encoders whose position ids count the non-padding tokens of ``input_ids`` (RoBERTa,
  XLM-RoBERTa, CamemBERT, MPNet, ...: their embedding module has a ``padding_idx`` and
  a ``create_position_ids_from_input_ids`` method, or a function of that name in its module).
  From ``inputs_embeds`` they would number the positions from the first one, pads included;
  :func:`embedding_batch` passes the ``position_ids`` the model computes from ``input_ids``
  instead, so left and right padding are both exact.
- Last-token-pooling classifiers (``*ForSequenceClassification`` of GPT-2, Llama, Mistral, Qwen,
  OPT, ... with a ``pad_token_id``): from ``input_ids`` they pool the last token that is not
  ``pad_token_id``, from ``inputs_embeds`` the last position. They are exact when every row ends
  with a real token: pad on the left (``tokenizer.padding_side = "left"``).
  :func:`embedding_batch` raises a ``ValueError`` naming the model for a row of ``input_ids``
  ending with ``pad_token_id`` (right padding, or a pad token equal to a sequence's last token,
  e.g. an appended EOS token).
- Encoder-decoder classifiers (``*ForSequenceClassification`` of BART, mBART, PLBart, T5, mT5,
  ...) pool their EOS tokens found in ``input_ids`` and raise ``NotImplementedError`` on
  ``inputs_embeds``: :func:`embedding_batch` raises a ``TypeError`` naming the model.

Other models reading ``input_ids`` beyond the lookup (e.g. ESM's token dropout, which rescales the
embeddings by the share of mask tokens) are not exact. To check a model, compare
``model(**batch).logits`` with ``model(**embedding_batch(model, batch)).logits`` in eval mode.

**Exact probe and attention kernels.** The exact probe (``probe="exact"``, and ``"auto"`` in
bf16/fp16 or under autocast to them) takes a forward-mode derivative (or a double backward)
through the attention, which PyTorch's fused scaled-dot-product-attention kernels do not provide
(e.g. ``_scaled_dot_product_flash_attention_for_cpu``, chosen for the default ``"sdpa"``
attention without padding or in eval mode). When the probe resolves to exact, :func:`hf_vat_loss`
and :func:`hf_virtual_adversarial_perturbation` therefore run under
``torch.nn.attention.sdpa_kernel([SDPBackend.MATH])``, the differentiable composite backend
(slower, and it holds the [B, heads, T, T] attention weights). Attention outside PyTorch's
``scaled_dot_product_attention`` (``attn_implementation="flash_attention_2"``, ...) is not
covered: use ``"sdpa"`` or ``"eager"`` with the exact probe.

**Embedding normalization.** Miyato et al. normalize the word embeddings by their frequency-weighted
mean and variance, so the model cannot shrink the perturbation's effect by growing the embedding
norms. That requires changing the model's embedding layer, which a pretrained transformer's later
layers (and its embedding LayerNorm) were not trained with; it is not done here. Choose ``eps``
relative to the norm of the embedded sequence instead (:func:`torchvat.suggest_eps` with
``rule="norm"`` on a few embedded batches gives a starting point).

**SMART-style regularization** (Jiang et al. 2020): ``divergence=symmetric_categorical_kl`` and
``norm="linf"`` (the power-iteration direction projected onto the L-infinity ball of radius ``eps``
by its sign). The Bregman proximal point part of SMART is not implemented.

Contents: :func:`word_embeddings`, :func:`embedding_batch`, :func:`hf_vat_loss`,
:func:`hf_virtual_adversarial_perturbation`, :func:`hf_adversarial_loss`,
:func:`symmetric_categorical_kl`, :class:`VATArguments` and ``VATTrainer``, a subclass of
``transformers.Trainer`` (built on first access, so that importing this module never needs
``transformers``)::

    from torchvat.integrations.hf import VATArguments, VATTrainer

    trainer = VATTrainer(
        model=model,  # e.g. BertForSequenceClassification
        args=TrainingArguments(output_dir="out"),
        train_dataset=train_set,  # unlabeled rows have labels == -100
        vat_args=VATArguments(method="vat", eps=1.0, alpha=1.0),
    )
    trainer.train()

References:
    T. Miyato, A. M. Dai, I. Goodfellow. Adversarial Training Methods for Semi-Supervised Text
    Classification. ICLR 2017 (arXiv:1605.07725).

    H. Jiang, P. He, W. Chen, X. Liu, J. Gao, T. Zhao. SMART: Robust and Efficient Fine-Tuning for
    Pre-trained Natural Language Models through Principled Regularized Optimization. ACL 2020
    (arXiv:1911.03437).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from torchvat.core import (
    RNGSnapshot,
    adversarial_loss,
    categorical_kl,
    vat_loss,
    virtual_adversarial_perturbation,
)
from torchvat.core._checks import Reduction, check_choice, check_nonnegative, extract_output
from torchvat.core.divergence import Divergence
from torchvat.core.perturbation import Norm, Probe, check_common, resolve_probe

__all__ = [
    "IGNORE_INDEX",
    "VAT_ARGS_FILE",
    "VATArguments",
    "VATTrainer",  # noqa: F822 -- defined on first access by the module's __getattr__
    "embedding_batch",
    "hf_adversarial_loss",
    "hf_vat_loss",
    "hf_virtual_adversarial_perturbation",
    "supervised_cross_entropy",
    "symmetric_categorical_kl",
    "word_embeddings",
]

#: The label of an unlabeled row (the ``ignore_index`` of ``transformers`` losses).
IGNORE_INDEX = -100
_EMBEDS = "inputs_embeds"
_METHODS = ("vat", "at", "vat+at")
_DIVERGENCES = ("kl", "symmetric_kl")
_VAT_ON = ("all", "unlabeled")


def word_embeddings(model: Any, input_ids: Tensor) -> Tensor:
    """The output of the model's input (word) embedding layer only: ``model.get_input_embeddings()(input_ids)``.

    No position or token-type embedding, LayerNorm or dropout is applied: the model applies them
    itself when this tensor is passed as ``inputs_embeds``.

    Args:
        model: a model with ``get_input_embeddings()`` (every ``transformers.PreTrainedModel``).
        input_ids: token ids [B, T] (integer tensor).

    Returns:
        The word embeddings [B, T, H], differentiable with respect to the embedding matrix.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> cfg = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                  intermediate_size=16, max_position_embeddings=16)
        >>> word_embeddings(BertModel(cfg), torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 8])
    """
    get = getattr(model, "get_input_embeddings", None)
    if not callable(get):
        raise TypeError(
            "model must have get_input_embeddings() (a transformers PreTrainedModel; unwrap DDP/"
            f"DataParallel wrappers first), got {type(model).__name__}"
        )
    layer = get()
    if layer is None:
        raise TypeError(f"model.get_input_embeddings() returned None for {type(model).__name__}")
    if not isinstance(input_ids, Tensor) or input_ids.is_floating_point() or input_ids.is_complex():
        got = f"dtype {input_ids.dtype}" if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise TypeError(f"input_ids must be an integer tensor of token ids, got {got}")
    return layer(input_ids)


def embedding_batch(model: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``batch`` with ``input_ids`` replaced by their word embeddings, ``inputs_embeds``.

    The ``labels`` entry is dropped (VAT needs none, and the model should not compute its own loss
    in every perturbed pass); every other entry (``attention_mask``, ``token_type_ids``, ...) passes
    through. A batch that already holds ``inputs_embeds`` (and no ``input_ids``) is returned as a
    copy without ``labels``.

    What the model would still have read from ``input_ids`` (see the module docstring): when its
    embedding module computes position ids from ``input_ids`` (RoBERTa, MPNet, ...) and ``batch``
    has no ``position_ids``, the ``position_ids`` it would compute are added; for a
    last-token-pooling classifier (GPT-2, Llama, ...), rows of ``input_ids`` must end with a real
    token (left padding).

    Args:
        model: a model with ``get_input_embeddings()`` (only used when ``batch`` holds ``input_ids``),
            or a module wrapping one (the ``transformers`` model in it is the one checked).
        batch: the keyword arguments of the model's ``forward``.

    Returns:
        A new dict, ready for ``model(**out)``.

    Raises:
        TypeError: the model does not accept ``inputs_embeds`` (encoder-decoder classifiers such as
            ``BartForSequenceClassification``).
        ValueError: a row of ``input_ids`` ends with ``pad_token_id`` and the model pools the last
            non-pad token (``GPT2ForSequenceClassification`` with right padding, ...).

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> cfg = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                  intermediate_size=16, max_position_embeddings=16)
        >>> out = embedding_batch(BertModel(cfg), {"input_ids": torch.tensor([[1, 2]]), "labels": torch.tensor([0])})
        >>> sorted(out), out["inputs_embeds"].shape
        (['inputs_embeds'], torch.Size([1, 2, 8]))
    """
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"batch must be a mapping of model inputs (e.g. a dict from a collator), got {type(batch).__name__}"
        )
    out = {k: v for k, v in batch.items() if k != "labels"}
    has_ids = out.get("input_ids") is not None
    hf_model = _transformers_model(model)
    if hf_model is not None:
        _check_accepts_inputs_embeds(hf_model)
    if out.get(_EMBEDS) is not None:
        if has_ids:
            raise ValueError("batch must hold either input_ids or inputs_embeds, got both")
        out.pop("input_ids", None)
        return out
    if not has_ids:
        raise ValueError(f"batch must hold input_ids or inputs_embeds, got keys {sorted(map(str, batch.keys()))}")
    input_ids = out.pop("input_ids")
    out[_EMBEDS] = word_embeddings(model, input_ids)
    if hf_model is not None:
        _check_last_tokens(hf_model, input_ids)
    if out.get("position_ids") is None:
        position_ids = _position_ids_from_input_ids(model, input_ids)
        if position_ids is not None:
            out["position_ids"] = position_ids
    return out


def _transformers_model(model: Any) -> Any:
    """The ``transformers`` model in ``model``, or ``None``.

    That is ``model`` itself, or the first submodule defined in ``transformers`` with a ``config``
    (inside a DDP, PEFT or other wrapper).
    """
    for m in model.modules() if isinstance(model, nn.Module) else (model,):
        if getattr(m, "config", None) is not None and type(m).__module__.startswith("transformers"):
            return m
    return None


@functools.cache
def _forward_source(cls: type) -> str:
    """The source of ``cls.forward`` ("" when unavailable): what the model does with ``input_ids``."""
    try:
        return inspect.getsource(cls.forward)
    except (AttributeError, OSError, TypeError):
        return ""


def _check_accepts_inputs_embeds(hf_model: Any) -> None:
    """Raise for an encoder-decoder classifier whose ``forward`` rejects ``inputs_embeds`` (BART, T5, ...)."""
    source = _forward_source(type(hf_model))
    if "input embeddings is currently not supported" in source and getattr(
        hf_model.config, "is_encoder_decoder", False
    ):
        raise TypeError(
            f"model must accept inputs_embeds, got {type(hf_model).__name__}, whose forward raises "
            "NotImplementedError for them (it pools the EOS tokens it finds in input_ids); torchvat "
            "perturbs the word embeddings: use an encoder (BERT, RoBERTa, ...) or a decoder-only "
            "classifier (GPT-2, Llama, ... with left padding)"
        )


def _check_last_tokens(hf_model: Any, input_ids: Tensor) -> None:
    """Raise when ``hf_model`` pools the last non-pad token of ``input_ids`` and a row ends with the pad token.

    Such a classifier (``GPT2ForSequenceClassification``, the ``transformers`` generic one of Llama,
    Mistral, ...) pools the last position when given ``inputs_embeds``: the same token exactly when
    the last token of each row is not ``pad_token_id``.
    """
    config = hf_model.config
    text_config = config.get_text_config() if callable(getattr(config, "get_text_config", None)) else config
    pad = getattr(text_config, "pad_token_id", None)
    source = _forward_source(type(hf_model))
    pools_last = "pad_token_id" in source and ("last_non_pad_token" in source or "sequence_lengths" in source)
    if pad is None or not pools_last or input_ids.ndim == 0:
        return  # without pad_token_id both paths pool the last position
    ends = (input_ids[..., -1] == pad).flatten()
    if bool(ends.any()):
        rows = ends.nonzero().flatten().tolist()
        raise ValueError(
            f"input_ids must end with a token other than pad_token_id={pad} in every row for "
            f"{type(hf_model).__name__}, which pools the last non-pad token of input_ids but the last "
            f"position of inputs_embeds; got rows {rows[:8]}{' ...' if len(rows) > 8 else ''} ending with "
            "it: pad on the left (tokenizer.padding_side = 'left'), with a pad token that does not end "
            "sequences (not an appended EOS token)"
        )


def _position_ids_from_input_ids(model: Any, input_ids: Tensor) -> Tensor | None:
    """The position ids the model's embedding module computes from ``input_ids``, or ``None`` if it does not.

    That module is the parent of ``model.get_input_embeddings()``; RoBERTa-style ones have a
    ``padding_idx`` and a ``create_position_ids_from_input_ids`` method (MPNet, ESM, Longformer, ...:
    a function of that name in the module's Python module), used here as the model uses it.
    """
    if not isinstance(model, nn.Module):
        return None
    layer = model.get_input_embeddings()
    parent = next((m for m in model.modules() if any(c is layer for c in m.children())), None)
    if parent is None:
        return None
    padding_idx = getattr(parent, "padding_idx", None)
    create = getattr(parent, "create_position_ids_from_input_ids", None)
    if create is None:
        create = getattr(sys.modules.get(type(parent).__module__), "create_position_ids_from_input_ids", None)
    if not callable(create) or not isinstance(padding_idx, int):
        return None
    return create(input_ids, padding_idx)


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
    inputs = embedding_batch(model, batch)
    with _probe_attention(model, inputs, probe):
        return vat_loss(
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
            reduction=reduction,
            generator=generator,
            rng=rng,
        )


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
        reduction=reduction,
        rng=rng,
    )


#: the file :class:`VATTrainer` writes the :class:`VATArguments` to, beside a saved model
VAT_ARGS_FILE = "torchvat_vat_args.json"


@dataclass
class VATArguments:
    """Hyperparameters of :class:`VATTrainer` (checked on construction).

    Args:
        method: ``"vat"`` (supervised + ``alpha`` * VAT), ``"at"`` (supervised + ``at_alpha`` * AT on
            labeled rows) or ``"vat+at"`` (both, as in Miyato et al. 2017).
        eps: VAT perturbation size, over each embedded sequence (L2) or per element (L-inf).
        xi: finite-difference step of the probe (``"auto"`` or a number); see :func:`torchvat.vat_loss`.
        n_power: power-iteration steps (0: random perturbation training).
        alpha: weight of the VAT term; 0 switches VAT off (not computed).
        at_eps: AT perturbation size; ``None`` uses ``eps``.
        at_alpha: weight of the AT term; 0 switches AT off.
        norm: ``"l2"`` or ``"linf"`` (SMART-style L-inf ball), for both VAT and AT.
        divergence: ``"kl"`` (the paper's) or ``"symmetric_kl"`` (SMART).
        probe: ``"auto"`` | ``"finite_difference"`` | ``"exact"``; see :func:`torchvat.vat_loss`.
        vat_on: ``"all"`` (VAT on labeled and unlabeled rows, the paper's) or ``"unlabeled"`` (rows
            labeled ``-100`` only).

    Example:
        >>> VATArguments(method="vat+at", eps=2.0).at_eps is None
        True
        >>> VATArguments(method="mixup")
        Traceback (most recent call last):
        ...
        ValueError: method must be one of 'vat', 'at', 'vat+at', got 'mixup'
    """

    method: str = "vat"
    eps: float = 1.0
    xi: float | str = "auto"
    n_power: int = 1
    alpha: float = 1.0
    at_eps: float | None = None
    at_alpha: float = 1.0
    norm: str = "l2"
    divergence: str = "kl"
    probe: str = "auto"
    vat_on: str = "all"

    def __post_init__(self) -> None:
        check_choice("method", self.method, _METHODS)
        check_common(self.eps, self.xi, self.n_power, self.norm, self.probe)
        check_nonnegative("alpha", self.alpha)
        if self.at_eps is not None:
            check_nonnegative("at_eps", self.at_eps)
        check_nonnegative("at_alpha", self.at_alpha)
        check_choice("divergence", self.divergence, _DIVERGENCES)
        check_choice("vat_on", self.vat_on, _VAT_ON)

    @property
    def uses_vat(self) -> bool:
        """Whether the VAT term is computed."""
        return self.method in ("vat", "vat+at") and self.alpha > 0

    @property
    def uses_at(self) -> bool:
        """Whether the AT term is computed."""
        return self.method in ("at", "vat+at") and self.at_alpha > 0

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the arguments as :data:`VAT_ARGS_FILE` (JSON) in ``directory``.

        :class:`VATTrainer` does so beside every saved model and checkpoint.

        Returns:
            The file.
        """
        path = Path(directory) / VAT_ARGS_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> VATArguments:
        """Read the arguments :meth:`save` wrote in ``directory`` (a saved model or a checkpoint folder).

        Raises:
            FileNotFoundError: If ``directory`` holds no ``VAT_ARGS_FILE``.

        Example:
            >>> import tempfile
            >>> with tempfile.TemporaryDirectory() as d:
            ...     _ = VATArguments(method="vat+at", eps=2.0).save(d)
            ...     VATArguments.load(d).eps
            2.0
        """
        path = Path(directory) / VAT_ARGS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{VAT_ARGS_FILE} not found in {directory} (it is written by VATTrainer.save_model)"
            )
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def _zero(like: Tensor) -> Tensor:
    """A (positive) zero scalar that keeps ``like``'s graph (backward through it gives zero gradients)."""
    return like.sum() * 0.0 + 0.0  # -0.0 + 0.0 == +0.0: a negative sum would give -0.0


def supervised_cross_entropy(logits: Tensor, labels: Tensor | None) -> Tensor:
    """Mean cross entropy over the rows whose label is not ``-100``; a (graph-keeping) zero if none.

    Args:
        logits: [B, C] class scores.
        labels: [B] class indices, ``-100`` for unlabeled rows, or ``None`` (no labels).

    Example:
        >>> z = torch.tensor([[0.0, 0.0], [5.0, 0.0]])
        >>> round(supervised_cross_entropy(z, torch.tensor([1, -100])).item(), 4)
        0.6931
        >>> supervised_cross_entropy(-z, torch.tensor([-100, -100])).item()
        0.0
    """
    if labels is None:
        return _zero(logits)
    _check_labels(labels, logits)
    n = (labels != IGNORE_INDEX).sum()
    if int(n) == 0:
        return _zero(logits)
    ce = F.cross_entropy(
        logits.to(torch.promote_types(logits.dtype, torch.float32)), labels, ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return ce / n


def _check_labels(labels: Any, logits: Tensor) -> None:
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.is_complex():
        got = f"dtype {labels.dtype}" if isinstance(labels, Tensor) else type(labels).__name__
        raise TypeError(
            "labels must be an integer tensor of class indices (-100 = unlabeled), got "
            f"{got}; override VATTrainer.supervised_loss for other targets"
        )
    if labels.shape != logits.shape[:1]:
        raise ValueError(
            f"labels must have shape [{logits.shape[0]}] (one class index per row), got {tuple(labels.shape)}"
        )


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


def _masked_mean(values: Tensor, rows: Tensor) -> Tensor:
    """Mean of ``values`` [B] over the rows where ``rows`` [B] is True (the caller ensures one)."""
    w = rows.to(values.dtype)
    return (values * w).sum() / w.sum()


@functools.cache
def _build_vat_trainer() -> type:
    """Define ``VATTrainer`` (a ``transformers.Trainer`` subclass); imports ``transformers``."""
    from transformers import Trainer

    class VATTrainer(Trainer):
        r"""A ``transformers.Trainer`` whose loss adds VAT and/or AT on the word embeddings.

        .. math::
            L = \frac{1}{|\mathcal{L}|}\sum_{i \in \mathcal{L}} \ell(f(e_i), y_i)
                + \alpha\, \frac{1}{|\mathcal{V}|}\sum_{i \in \mathcal{V}} \mathrm{LDS}(e_i)
                + \alpha_{\mathrm{at}}\, \frac{1}{|\mathcal{L}|}\sum_{i \in \mathcal{L}} L_{\mathrm{adv}}(e_i, y_i)

        with :math:`\mathcal{L}` the labeled rows of the batch (``labels != -100``) and
        :math:`\mathcal{V}` all rows (``vat_on="all"``) or the unlabeled ones. Semi-supervised use:
        put the unlabeled examples in the training set with label ``-100``; they get only the VAT
        term. Only single-label classification heads (logits [B, C]) are handled by the default
        :meth:`supervised_loss`; override it for other targets.

        One step: the word embeddings :math:`e` are computed once; an :class:`~torchvat.RNGSnapshot`
        is captured; one clean pass ``model(inputs_embeds=e, ...)`` gives the supervised loss and
        the detached VAT target (``logits=``), and its graph serves AT's input gradient; the
        perturbation searches replay the snapshot, so dropout draws the clean pass's masks. VAT is
        computed over the whole batch (reduction ``"none"``) and averaged over
        :math:`\mathcal{V}`, so the replayed dropout masks match the clean pass row for row.

        The returned loss is a per-batch mean: ``num_items_in_batch`` is ignored and the
        ``Trainer`` divides by the gradient accumulation steps. In evaluation (``model.training``
        false) the loss is the supervised term only. The terms are logged as ``loss_supervised``,
        ``loss_vat`` and ``loss_at``: each the mean since the last log over the batches that had it
        (a batch without labeled rows adds nothing to ``loss_supervised`` and ``loss_at``), to 6
        significant digits. Multi-process (DDP) training is not
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
            self.last_loss_terms: dict[str, Tensor] = {}
            self._term_sums: dict[str, Tensor] = {}
            self._term_counts: dict[str, Tensor | int] = {}  # per term: a batch without labeled rows has no "ce"

        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            """Save the model as ``Trainer.save_model`` does, and the :class:`VATArguments` beside it."""
            super().save_model(output_dir, _internal_call=_internal_call)
            if self.args.should_save:
                self.vat_args.save(output_dir if output_dir is not None else self.args.output_dir)

        @property
        def label_key(self) -> str:
            """The batch entry holding the labels (the single ``label_names`` entry, else ``"labels"``)."""
            names = getattr(self, "label_names", None)
            return names[0] if names and len(names) == 1 else "labels"

        def supervised_loss(self, logits: Tensor, labels: Tensor | None) -> Tensor:
            """The supervised term: mean cross entropy over labeled rows (override for other targets).

            Args:
                logits: clean logits [B, C].
                labels: [B] class indices (``-100`` = unlabeled) or ``None``.
            """
            return supervised_cross_entropy(logits, labels)

        def compute_loss_terms(self, model: Any, inputs: Mapping[str, Any]) -> tuple[dict[str, Tensor], Any]:
            """The named, unweighted loss terms of one batch, and the clean model output.

            Args:
                model: the (possibly wrapped) model.
                inputs: the collated batch, with ``input_ids`` and labels under :attr:`label_key`.

            Returns:
                ``({"supervised": ..., "vat": ..., "at": ...}, outputs)``; ``"vat"``/``"at"`` only
                when computed (training mode, positive weight, rows to apply them to).

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
            backend = contextlib.nullcontext()
            if model.training and self.vat_args.uses_vat:
                backend = _probe_attention(model, batch, self.vat_args.probe)
            with backend:
                outputs = model(**batch)
            logits = extract_output(outputs, None)
            if logits.ndim != 2:
                raise ValueError(
                    "VATTrainer handles classification heads with logits of shape [B, C], got "
                    f"{tuple(logits.shape)}; use hf_vat_loss with output_fn/divergence for other heads"
                )
            terms = {"supervised": self.supervised_loss(logits, labels)}
            if not model.training:
                return terms, outputs
            a = self.vat_args
            n = logits.shape[0]
            labeled = (
                labels != IGNORE_INDEX if labels is not None else torch.zeros(n, dtype=torch.bool, device=logits.device)
            )
            if a.uses_vat:
                rows = ~labeled if a.vat_on == "unlabeled" else torch.ones_like(labeled)
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
                    reduction="none",
                    rng=rng,
                )
                terms["at"] = _masked_mean(adv, labeled)
            return terms, outputs

        def combine_loss_terms(self, terms: Mapping[str, Tensor]) -> Tensor:
            """The weighted sum: supervised + ``alpha`` * vat + ``at_alpha`` * at."""
            weights = {"supervised": 1.0, "vat": self.vat_args.alpha, "at": self.vat_args.at_alpha}
            return sum((weights[k] * v for k, v in terms.items()), start=torch.zeros(()).to(terms["supervised"]))

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
            terms, outputs = self.compute_loss_terms(model, inputs)
            loss = self.combine_loss_terms(terms)
            self.last_loss_terms = {k: v.detach() for k, v in terms.items()}
            if model.training:
                labels = inputs.get(self.label_key)
                # a batch without labeled rows has a placeholder zero, not a supervised loss: it is not
                # counted; the count stays on the device (read when logging), so no step waits for it
                labeled: Tensor | int = (
                    (labels != IGNORE_INDEX).any().float() if isinstance(labels, Tensor) else int(labels is not None)
                )
                for k, v in self.last_loss_terms.items():
                    self._term_sums[k] = self._term_sums.get(k, 0.0) + v.float()
                    self._term_counts[k] = self._term_counts.get(k, 0) + (labeled if k == "supervised" else 1)
            if not return_outputs:
                return loss
            if not isinstance(outputs, Mapping):
                # return_dict=False: a tuple (logits, ...) without the loss (no labels were passed);
                # Trainer.prediction_step takes outputs[1:] as the predictions, as after a model's own loss
                outputs = (loss.detach(), *(outputs if isinstance(outputs, tuple | list) else (outputs,)))
            return loss, outputs

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            """Add the mean of each loss term over the batches that had it since the last training log.

            ``loss_supervised`` and ``loss_at`` average the batches with labeled rows, ``loss_vat`` those
            with rows to regularize; the means are rounded to 6 significant digits (so a small term
            is not logged as 0).
            """
            if "loss" in logs and self._term_counts:
                for k, v in self._term_sums.items():
                    count = float(self._term_counts[k])
                    if count:
                        logs[f"loss_{k}"] = float(f"{float(v) / count:.6g}")
                self._term_sums, self._term_counts = {}, {}
            super().log(logs, *args, **kwargs)

    VATTrainer.__module__ = __name__
    VATTrainer.__qualname__ = "VATTrainer"
    return VATTrainer


def __getattr__(name: str) -> Any:
    """Build ``VATTrainer`` on first access (imports ``transformers``)."""
    if name == "VATTrainer":
        return _build_vat_trainer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"VATTrainer"})
