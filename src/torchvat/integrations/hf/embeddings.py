"""The embedding path: a ``transformers`` model's word embeddings fed back as ``inputs_embeds``.

:func:`word_embeddings` is the output of the input (word) embedding layer only;
:func:`embedding_batch` replaces a batch's ``input_ids`` by them, with what the model would still
have read from ``input_ids`` (position ids, the last real token); see :mod:`torchvat.integrations.hf`
for the model families it is exact for. Needs no ``transformers`` import.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

__all__ = ["IGNORE_INDEX", "embedding_batch", "word_embeddings"]

#: The label of an unlabeled row (the ``ignore_index`` of ``transformers`` losses).
IGNORE_INDEX = -100
_EMBEDS = "inputs_embeds"


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


def _model_class(model: Any) -> Any:
    """``type(model)``, typed as a hashable key for :func:`_forward_source`'s cache."""
    return type(model)


@functools.cache
def _forward_source(cls: Any) -> str:
    """The source of ``cls.forward`` ("" when unavailable): what the model does with ``input_ids``."""
    try:
        return inspect.getsource(cls.forward)
    except (AttributeError, OSError, TypeError):
        return ""


def _check_accepts_inputs_embeds(hf_model: Any) -> None:
    """Raise for an encoder-decoder classifier whose ``forward`` rejects ``inputs_embeds`` (BART, T5, ...)."""
    source = _forward_source(_model_class(hf_model))
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
    source = _forward_source(_model_class(hf_model))
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
    hf_model: Any = model  # a transformers PreTrainedModel (nn.Module does not declare its methods)
    layer = hf_model.get_input_embeddings()
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
