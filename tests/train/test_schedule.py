from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from torchvat.train import (
    Callback,
    IterationSchedule,
    TrainConfig,
    Trainer,
    build_optimizer,
    warmup_factor,
)


def _values(config, steps):
    opt = build_optimizer(nn.Linear(2, 2), config)
    sched = IterationSchedule(opt, config)
    lrs, betas = [], []
    for t in steps:
        sched.apply(t)
        lrs.append(opt.param_groups[0]["lr"])
        betas.append(opt.param_groups[0].get("betas", (None,))[0])
    return lrs, betas


def test_paper_schedule_values():
    cfg = TrainConfig(iterations=12, lr=1e-3, decay_fraction=0.25)
    lrs, betas = _values(cfg, range(13))
    assert lrs[:9] == [1e-3] * 9
    assert lrs[9:] == pytest.approx([1e-3, 2e-3 / 3, 1e-3 / 3, 0.0])
    assert betas[:9] == [0.9] * 9 and betas[9:] == [0.5] * 4


def test_paper_schedule_without_decay():
    lrs, betas = _values(TrainConfig(iterations=5, decay_fraction=0.0), range(6))
    assert lrs == [1e-3] * 6 and betas == [0.9] * 6


def test_cosine_and_constant():
    lrs, _ = _values(TrainConfig(iterations=4, optimizer="sgd", lr=0.1, schedule="cosine"), range(5))
    assert lrs == pytest.approx([0.1 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(5)])
    lrs, _ = _values(TrainConfig(iterations=4, schedule="constant"), range(5))
    assert lrs == [1e-3] * 5


def test_trainer_applies_paper_schedule(moons, mlp, tiny):
    seen = []

    class Record(Callback):
        def on_step_end(self, **kwargs):
            group = kwargs["trainer"].optimizer.param_groups[0]
            seen.append((group["lr"], group["betas"][0]))

    trainer = Trainer(mlp(), moons, method="vat", callbacks=[Record()], **tiny(iterations=9, decay_fraction=1 / 3))
    trainer.fit()
    lrs = [lr for lr, _ in seen]
    assert lrs[:6] == [1e-3] * 6 and lrs[6:] == pytest.approx([1e-3, 2e-3 / 3, 1e-3 / 3])
    assert [b for _, b in seen] == [0.9] * 6 + [0.5] * 3
    group = trainer.optimizer.param_groups[0]
    assert group["lr"] == 0.0 and group["betas"][0] == 0.5  # after the end


def test_sgd_nesterov_optimizer():
    opt = build_optimizer(nn.Linear(2, 2), TrainConfig(optimizer="sgd", lr=0.05, momentum=0.8))
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.8


def test_warmup_factor():
    assert [warmup_factor(t, 0) for t in range(3)] == [1.0] * 3
    assert [warmup_factor(t, 2) for t in range(3)] == [0.5, 1.0, 1.0]
