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

**Sequence and token classification.** The class dimension of the logits comes from the model's
task (:func:`task_class_dim`): ``[B, C]`` for sequence classifiers, ``[B, T, C]`` for token
classifiers (``*ForTokenClassification``) and language-model heads, whose divergences are taken
per token over its classes (never over the positions), averaged over the sequence's tokens, with
padded positions (``attention_mask == 0``) left out. Labels: ``-100`` marks an unlabeled row of a
sequence classifier; a token classifier's labels [B, T] use ``-100`` for the tokens without a
label too (special tokens, continuation sub-words), so **an unlabeled sequence is one whose tokens
are all labeled -100** (:func:`labeled_rows`): it gets the VAT term only.

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
:func:`symmetric_categorical_kl`, :class:`VATArguments` and :class:`VATTrainer`, a subclass of
``transformers.Trainer``. The package's modules: :mod:`~torchvat.integrations.hf.embeddings` (the
embedding path), :mod:`~torchvat.integrations.hf.losses` (the losses),
:mod:`~torchvat.integrations.hf.arguments` (:class:`VATArguments`) and
:mod:`~torchvat.integrations.hf.trainer` (:class:`VATTrainer`, the only one importing
``transformers``, at its top). ``VATTrainer`` is imported from it on first access, so that
``import torchvat.integrations.hf`` never needs ``transformers``::

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

from typing import TYPE_CHECKING, Any

from torchvat.integrations.hf.arguments import VAT_ARGS_FILE, VATArguments
from torchvat.integrations.hf.embeddings import IGNORE_INDEX, embedding_batch, word_embeddings
from torchvat.integrations.hf.losses import (
    TOKEN_LEVEL_HEADS,
    hf_adversarial_loss,
    hf_vat_loss,
    hf_virtual_adversarial_perturbation,
    labeled_rows,
    supervised_cross_entropy,
    symmetric_categorical_kl,
    task_class_dim,
)

if TYPE_CHECKING:  # for type checkers and the API reference; at run time __getattr__ imports it on first access
    from torchvat.integrations.hf.trainer import VATTrainer

__all__ = [
    "IGNORE_INDEX",
    "TOKEN_LEVEL_HEADS",
    "VAT_ARGS_FILE",
    "VATArguments",
    "VATTrainer",  # imported from .trainer on first access (it imports transformers)
    "embedding_batch",
    "hf_adversarial_loss",
    "hf_vat_loss",
    "hf_virtual_adversarial_perturbation",
    "labeled_rows",
    "supervised_cross_entropy",
    "symmetric_categorical_kl",
    "task_class_dim",
    "word_embeddings",
]


def __getattr__(name: str) -> Any:
    """Import ``VATTrainer`` from :mod:`torchvat.integrations.hf.trainer` on first access (imports ``transformers``)."""
    if name == "VATTrainer":
        from torchvat.integrations.hf.trainer import VATTrainer

        return VATTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
