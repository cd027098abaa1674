"""The recipes whose schedules needed the step schedule, the fractional cosine or the sigmoid ramp (issue 18)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from torch import nn

from torchvat.recipes import load_recipe
from torchvat.runs import RunConfig
from torchvat.train import IterationSchedule, build_optimizer
from torchvat.train.optim import warmup_factor

DOC = (Path(__file__).resolve().parents[2] / "docs" / "recipes.md").read_text(encoding="utf-8")
USB = ["usb-cifar10-40", "usb-cifar10-250", "usb-cifar10-4000", "usb-svhn-40", "usb-svhn-250", "usb-svhn-1000"]


def _train(name):
    return RunConfig.from_dict(load_recipe(name).config(), where=name).train


def _lr(cfg, step):
    opt = build_optimizer(nn.Linear(2, 2), cfg)
    IterationSchedule(opt, cfg).apply(step)
    return opt.param_groups[0]["lr"]


def test_mnist_iclr2016_decays_by_0_9_after_each_epoch_of_500():
    # takerum/vat train_mnist_semisup.py:19, 21, 139-142, 206
    cfg = _train("mnist-100-iclr2016")
    assert (cfg.schedule, cfg.lr_decay, cfg.lr_decay_every, cfg.lr) == ("step", 0.9, 500, 0.002)
    assert [_lr(cfg, t) for t in (0, 499, 500, 49999)] == pytest.approx([0.002, 0.002, 0.0018, 0.002 * 0.9**99])


@pytest.mark.parametrize("name", ["oliver-cifar10-4000", "oliver-svhn-1000"])
def test_oliver_staircase_and_sigmoid_ramp(name):
    # brain-research/realistic-ssl-evaluation lib/hparams.py:30, 41-42, lib/ssl_framework.py:147-173
    cfg = _train(name)
    assert (cfg.schedule, cfg.lr_decay, cfg.lr_decay_every) == ("step", 0.2, 400000)
    assert (cfg.warmup_iters, cfg.warmup_shape) == (200000, "sigmoid")
    assert [_lr(cfg, t) for t in (399999, 400000)] == pytest.approx([0.003, 0.0006])
    assert warmup_factor(100000, cfg.warmup_iters, cfg.warmup_shape) == pytest.approx(math.exp(-5 * 0.25))
    assert "staircase" not in load_recipe(name).notes.split("Not expressible")[1]


@pytest.mark.parametrize("name", USB)
def test_usb_cosine_ends_at_cos_7_pi_16(name):
    # microsoft/Semi-supervised-learning semilearn/core/utils/build.py:217-240 (num_cycles = 7/16)
    cfg = _train(name)
    assert (cfg.schedule, cfg.cosine_fraction) == ("cosine", 7 / 16)
    assert _lr(cfg, cfg.iterations) / cfg.lr == pytest.approx(math.cos(7 * math.pi / 16))
    assert "USB's cosine" not in load_recipe(name).notes.split("Not expressible")[1]


def test_the_audit_no_longer_lists_the_schedules_as_not_fixed():
    rows = [line for line in DOC.splitlines() if "**Not fixed**" in line]
    assert rows  # the other deviations stay listed
    for word in ("exponential schedule", "sigmoid-shaped ramp", "staircase", "7/16 cosine"):
        assert not any(word in row for row in rows), word
