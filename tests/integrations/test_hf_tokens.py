"""Token classification through the Hugging Face door: [B, T, C] logits, padding, unlabeled sequences (issue 16)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForTokenClassification, TrainingArguments

from torchvat.integrations.hf import (
    IGNORE_INDEX,
    VATArguments,
    VATTrainer,
    hf_adversarial_loss,
    hf_vat_loss,
    labeled_rows,
    supervised_cross_entropy,
    task_class_dim,
)

VOCAB, SEQ, CLASSES = 100, 8, 5


def tiny_tagger(seed: int = 0, dtype: torch.dtype = torch.float32) -> BertForTokenClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=64, num_labels=CLASSES, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        initializer_range=0.2,
    )  # fmt: skip
    return BertForTokenClassification(cfg).to(dtype).eval()


def tagged_batch(seq: int = SEQ) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    mask = torch.ones(4, seq, dtype=torch.long)
    mask[1, seq // 2 :] = 0  # trailing padding
    mask[2, 2:] = 0
    ids = torch.randint(1, VOCAB, (4, seq), generator=g) * mask
    labels = torch.randint(0, CLASSES, (4, seq), generator=g).masked_fill(mask == 0, IGNORE_INDEX)
    labels[:, 0] = IGNORE_INDEX  # [CLS]
    labels[3] = IGNORE_INDEX  # an unlabeled sequence: all of its tokens -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class Shifted(nn.Module):
    """The tagger with ``shift`` [B, T, 1] added to every class's logit of each token: the same distributions."""

    def __init__(self, model: nn.Module, shift: torch.Tensor) -> None:
        super().__init__()
        self.model, self.shift = model, shift

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def forward(self, **kwargs):
        out = self.model(**kwargs)
        out.logits = out.logits + self.shift
        return out


def lds(model, batch, **kwargs) -> torch.Tensor:
    return hf_vat_loss(model, batch, eps=1.0, generator=torch.Generator().manual_seed(0), **kwargs)


def test_class_dim_comes_from_the_task():
    assert task_class_dim(tiny_tagger()) == -1
    assert task_class_dim(Shifted(tiny_tagger(), torch.zeros(()))) == -1  # found inside a wrapper


def test_lds_is_invariant_to_a_per_position_constant_on_all_class_logits():
    """Issue 16: the softmax was taken over the positions (dim 1): the LDS moved from 0.0394 to 0.0015."""
    model = tiny_tagger(dtype=torch.float64)
    batch = tagged_batch()
    shift = 5.0 * torch.randn(4, SEQ, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    clean, shifted = lds(model, batch), lds(Shifted(model, shift), batch)
    assert clean > 0
    torch.testing.assert_close(shifted, clean, rtol=1e-7, atol=0)
    # the softmax over the positions (class_dim=1, the former default) is not invariant
    assert not torch.allclose(lds(Shifted(model, shift), batch, class_dim=1), lds(model, batch, class_dim=1))


def test_one_token_sequences_work():
    model = tiny_tagger().train()
    batch = {"input_ids": torch.tensor([[5], [7]]), "attention_mask": torch.ones(2, 1, dtype=torch.long)}
    loss = lds(model, batch)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert model.bert.embeddings.word_embeddings.weight.grad is not None


def test_padded_positions_do_not_change_the_loss():
    model = tiny_tagger(dtype=torch.float64)
    batch = tagged_batch()
    other = dict(batch, input_ids=torch.where(batch["attention_mask"] == 1, batch["input_ids"], 17))
    reference = lds(model, batch, reduction="none")
    # (the probe's automatic step follows the whole input's scale, pads included: equal to float rounding)
    torch.testing.assert_close(lds(model, other, reduction="none"), reference, rtol=1e-5, atol=0)
    # the same sequences without their padding: the same per-token mean (a mean over all positions
    # would differ 2x and 4x)
    for row, length in ((1, SEQ // 2), (2, 2)):
        alone = {k: v[row : row + 1, :length] for k, v in batch.items() if k != "labels"}
        padded = {k: v[row : row + 1] for k, v in batch.items() if k != "labels"}
        torch.testing.assert_close(lds(model, alone, n_power=8), lds(model, padded, n_power=8), rtol=1e-5, atol=0)
    # left in, the padded positions' own outputs would count
    ones = torch.ones(4, SEQ)
    assert not torch.allclose(lds(model, other, output_mask=ones), lds(model, batch, output_mask=ones))


def test_adversarial_loss_averages_the_labeled_tokens_and_ignores_padding():
    model = tiny_tagger(dtype=torch.float64)
    batch = tagged_batch()
    labels = batch["labels"]
    adv = hf_adversarial_loss(model, batch, labels, eps=0.0, reduction="none")  # eps 0: the clean loss
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    for i in range(3):
        keep = labels[i] != IGNORE_INDEX
        expected = nn.functional.cross_entropy(logits[i][keep], labels[i][keep])
        torch.testing.assert_close(adv[i], expected)
    assert adv[3] == 0  # the unlabeled sequence
    other = dict(batch, input_ids=torch.where(batch["attention_mask"] == 1, batch["input_ids"], 17))
    torch.testing.assert_close(
        hf_adversarial_loss(model, other, labels, eps=1.0), hf_adversarial_loss(model, batch, labels, eps=1.0)
    )


def test_an_unlabeled_sequence_is_one_whose_tokens_are_all_minus_100():
    labels = tagged_batch()["labels"]
    assert labeled_rows(labels).tolist() == [True, True, True, False]
    assert labeled_rows(torch.tensor([3, IGNORE_INDEX])).tolist() == [True, False]
    model = tiny_tagger()
    batch = tagged_batch()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    own = model(**batch).loss  # transformers' token-classification loss: mean over the labeled tokens
    torch.testing.assert_close(supervised_cross_entropy(logits, labels), own)
    with pytest.raises(ValueError, match=r"labels must have shape \[4, 8\] \(one class index per token\)"):
        supervised_cross_entropy(logits, labels[:, :3])


def test_a_model_of_unknown_task_with_per_token_logits_needs_class_dim():
    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.head = nn.Embedding(VOCAB, 8), nn.Linear(8, CLASSES)

        def get_input_embeddings(self) -> nn.Module:
            return self.embed

        def forward(self, inputs_embeds, attention_mask=None):
            return {"logits": self.head(torch.tanh(inputs_embeds))}

    batch = {k: v for k, v in tagged_batch().items() if k != "labels"}
    with pytest.raises(ValueError, match=r"class_dim must be given for Tagger.*pass class_dim=-1"):
        lds(Tagger(), batch)
    assert lds(Tagger(), batch, class_dim=-1) > 0


def make_trainer(tmp_path, model, vat_args, dataset=None, **args) -> VATTrainer:
    options = {
        "output_dir": str(tmp_path), "max_steps": 1, "per_device_train_batch_size": 4, "learning_rate": 1e-3,
        "report_to": [], "use_cpu": True, "save_strategy": "no", "logging_steps": 1, "disable_tqdm": True, "seed": 0,
    }  # fmt: skip
    return VATTrainer(model=model, args=TrainingArguments(**(options | args)), train_dataset=dataset, vat_args=vat_args)


def test_trainer_on_a_token_classifier(tmp_path):
    model = tiny_tagger().train()
    batch = tagged_batch()
    trainer = make_trainer(tmp_path, model, VATArguments(method="at+vat", eps=0.5, regularize="unlabeled"))
    torch.manual_seed(0)
    terms, _ = trainer.compute_loss_terms(model, batch)
    assert set(terms) == {"ce", "vat", "at"}
    torch.testing.assert_close(terms["ce"], model(**batch).loss)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    torch.manual_seed(0)  # the same random start
    per_row = hf_vat_loss(model, inputs, eps=0.5, reduction="none")
    torch.testing.assert_close(terms["vat"], per_row[3])  # regularize="unlabeled": the all -100 sequence only
    adv = hf_adversarial_loss(model, inputs, batch["labels"], eps=0.5, reduction="none")
    torch.testing.assert_close(terms["at"], adv[:3].mean())  # AT on the labeled sequences
    rows = [{k: v[i] for k, v in batch.items()} for i in range(4)]
    trainer = make_trainer(tmp_path, model, VATArguments(method="at+vat", eps=0.5), dataset=rows)
    trainer.train()
    assert trainer.state.global_step == 1 and set(trainer.last_loss_terms) == {"ce", "vat", "at"}
