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


def _extended(extend, *, saved_total=12, new_total=24, step=12, **config):
    """A schedule over ``saved_total`` saved at ``step``, loaded into one over ``new_total`` with ``extend``."""
    cfg = TrainConfig(iterations=saved_total, lr=1e-3, decay_fraction=0.25, **config)
    opt = build_optimizer(nn.Linear(2, 2), cfg)
    old = IterationSchedule(opt, cfg)
    old.apply(step)
    state = old.state_dict()
    new_cfg = cfg.replace(iterations=new_total)
    opt = build_optimizer(nn.Linear(2, 2), new_cfg)
    new = IterationSchedule(opt, new_cfg)
    new.extend = extend
    new.load_state_dict(state)
    return new, opt


def _run(sched, opt, steps):
    lrs, betas = [], []
    for t in steps:
        sched.apply(t)
        lrs.append(opt.param_groups[0]["lr"])
        betas.append(opt.param_groups[0]["betas"][0])
    return lrs, betas


def test_extending_a_finished_run_recomputes_the_schedule_over_the_new_total_by_default():
    sched, opt = _extended("recompute")
    lrs, betas = _run(sched, opt, range(12, 25))
    assert lrs == _values(TrainConfig(iterations=24, lr=1e-3, decay_fraction=0.25), range(12, 25))[0]
    assert lrs[0] == 1e-3 and betas[0] == 0.9  # back to the full rate: the run had decayed to 1e-3 / 3
    assert sched.state_dict()["cap"] is None


def test_extending_with_continue_never_raises_the_rate():
    sched, opt = _extended("continue")
    last = 1e-3 / 3  # the rate of the saved run's last iteration (11 of 12, decay over the last 3)
    lrs, betas = _run(sched, opt, range(12, 25))
    planned = _values(TrainConfig(iterations=24, lr=1e-3, decay_fraction=0.25), range(12, 25))[0]
    assert lrs == pytest.approx([min(last, p) for p in planned])
    assert lrs[0] == pytest.approx(last) and lrs[-1] == 0.0
    assert betas == [0.5] * 13  # the decay had begun: beta1 stays at decay_beta1
    # a resumed extension (same total) keeps the cap: it continues as the uninterrupted one
    state = sched.state_dict()
    assert state["cap"] == [12, pytest.approx(1 / 3), True] and state["total"] == 24  # the factor, capped
    cfg = TrainConfig(iterations=24, lr=1e-3, decay_fraction=0.25)
    opt = build_optimizer(nn.Linear(2, 2), cfg)
    again = IterationSchedule(opt, cfg)
    again.load_state_dict({**state, "step": 18})
    assert _run(again, opt, range(18, 25))[0] == lrs[6:]


def test_continue_before_the_decay_equals_recompute_and_an_old_state_is_the_same_plan():
    assert _run(*_extended("continue", step=6), range(6, 25)) == _run(*_extended("recompute", step=6), range(6, 25))
    cfg = TrainConfig(iterations=24, lr=1e-3, decay_fraction=0.25)
    opt = build_optimizer(nn.Linear(2, 2), cfg)
    sched = IterationSchedule(opt, cfg)
    sched.extend = "continue"
    sched.load_state_dict({"step": 12, "base_lrs": [1e-3]})  # written before the plan was recorded
    assert sched.cap is None and opt.param_groups[0]["lr"] == 1e-3


def test_an_unknown_extend_mode_is_refused():
    cfg = TrainConfig(iterations=4)
    sched = IterationSchedule(build_optimizer(nn.Linear(2, 2), cfg), cfg)
    sched.extend = "restart"
    with pytest.raises(ValueError, match=r"extend must be one of \('recompute', 'continue'\), got 'restart'"):
        sched.load_state_dict(sched.state_dict())
