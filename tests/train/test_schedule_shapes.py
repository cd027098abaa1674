"""The step schedule, the cosine over a fraction of a half period and the sigmoid-shaped warm-up (issue 18)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from torchvat.train import Callback, IterationSchedule, TrainConfig, Trainer, build_optimizer, save_checkpoint
from torchvat.train.optim import planned_rate, warmup_factor


def _lrs(config, steps):
    opt = build_optimizer(nn.Linear(2, 2), config)
    sched = IterationSchedule(opt, config)
    out = []
    for t in steps:
        sched.apply(t)
        out.append(opt.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize(
    ("lr", "decay", "every"),
    [(0.002, 0.9, 5), (0.003, 0.2, 4)],  # the ICLR 2016 MNIST decay, Oliver et al.'s staircase (scaled down)
)
def test_step_schedule_multiplies_the_rate_by_lr_decay_every_lr_decay_every_iterations(lr, decay, every):
    cfg = TrainConfig(iterations=13, lr=lr, schedule="step", lr_decay=decay, lr_decay_every=every)
    lrs = _lrs(cfg, range(14))
    assert lrs == pytest.approx([lr * decay ** math.floor(t / every) for t in range(14)], rel=1e-12)
    assert lrs[:every] == [lr] * every and lrs[every] == pytest.approx(lr * decay)  # the first drop at t = every
    opt = build_optimizer(nn.Linear(2, 2), cfg)
    IterationSchedule(opt, cfg).apply(12)
    assert opt.param_groups[0]["betas"][0] == 0.9  # no decay phase: beta1 is untouched


def test_cosine_fraction_gives_usbs_cosine_and_none_keeps_the_half_period():
    total, lr = 16, 0.03
    usb = _lrs(
        TrainConfig(iterations=total, optimizer="sgd", lr=lr, schedule="cosine", cosine_fraction=7 / 16), range(17)
    )
    assert usb == pytest.approx([lr * math.cos(7 * math.pi * t / (16 * total)) for t in range(17)], rel=1e-12)
    assert usb[-1] / lr == pytest.approx(0.19509, abs=1e-5)  # cos(7 pi / 16)
    half = _lrs(TrainConfig(iterations=total, optimizer="sgd", lr=lr, schedule="cosine"), range(17))
    assert half == [lr * (0.5 * (1.0 + math.cos(math.pi * t / total))) for t in range(17)]  # unchanged, bitwise
    quarter = _lrs(TrainConfig(iterations=4, optimizer="sgd", lr=1.0, schedule="cosine", cosine_fraction=0.5), [4])
    assert quarter[0] == pytest.approx(0.0, abs=1e-15) and quarter[0] >= 0.0


def test_sigmoid_warmup_is_the_mean_teacher_ramp():
    ramp = [warmup_factor(t, 8, "sigmoid") for t in range(12)]
    assert ramp[:8] == pytest.approx([math.exp(-5.0 * (1.0 - t / 8) ** 2) for t in range(8)], rel=1e-12)
    assert ramp[0] == pytest.approx(math.exp(-5.0)) and ramp[8:] == [1.0] * 4
    assert [warmup_factor(t, 0, "sigmoid") for t in range(2)] == [1.0, 1.0]
    assert [warmup_factor(t, 4) for t in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]  # linear stays the default
    with pytest.raises(ValueError, match=r"^warmup_shape must be one of 'linear', 'sigmoid', got 'cosine'$"):
        warmup_factor(0, 4, "cosine")


def test_trainer_ramps_the_regularizer_with_the_sigmoid_shape(moons, mlp, tiny):
    trainer = Trainer(mlp(), moons, method="vat", alpha=0.3, **tiny(warmup_iters=6, warmup_shape="sigmoid"))
    for t in (0, 3, 6, 9):
        trainer.step = t
        weights = trainer.loss_weights()
        assert weights["vat"] == pytest.approx(0.3 * math.exp(-5.0 * (1.0 - min(t, 6) / 6) ** 2), rel=1e-12)
        assert weights["ce"] == 1.0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr_decay", 0.0, "lr_decay must be a number in (0, 1], got 0.0"),
        ("lr_decay", 1.5, "lr_decay must be a number in (0, 1], got 1.5"),
        ("lr_decay_every", 0, "lr_decay_every must be an integer >= 1 or None, got 0"),
        ("lr_decay_every", 2.5, "lr_decay_every must be an integer >= 1 or None, got 2.5"),
        ("cosine_fraction", 0.0, "cosine_fraction must be None or a number in (0, 0.5], got 0.0"),
        ("cosine_fraction", 0.75, "cosine_fraction must be None or a number in (0, 0.5], got 0.75"),
        ("warmup_shape", "exp", "warmup_shape must be one of 'linear', 'sigmoid', got 'exp'"),
        ("schedule", "exponential", "schedule must be one of 'paper', 'cosine', 'constant', 'step', got 'exponential'"),
    ],
)
def test_bad_values_are_refused_naming_the_field_the_expected_and_the_received(field, value, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        TrainConfig(**{field: value})


def test_the_step_schedule_needs_its_interval():
    with pytest.raises(ValueError, match=r"^lr_decay_every must be an integer >= 1 with schedule='step', got None$"):
        TrainConfig(schedule="step", lr_decay=0.5)
    TrainConfig(lr_decay_every=None)  # not needed by the other schedules


def test_a_config_saved_before_the_new_fields_loads_with_their_defaults():
    old = TrainConfig().to_dict()
    for name in ("lr_decay", "lr_decay_every", "cosine_fraction", "warmup_shape"):
        del old[name]
    cfg = TrainConfig.from_dict(old)
    assert (cfg.lr_decay, cfg.lr_decay_every, cfg.cosine_fraction, cfg.warmup_shape) == (0.1, None, None, "linear")
    assert cfg == TrainConfig()


def test_extending_a_run_with_continue_caps_the_fractional_cosine_at_its_last_rate():
    cfg = TrainConfig(iterations=8, optimizer="sgd", lr=1.0, schedule="cosine", cosine_fraction=7 / 16)
    old = IterationSchedule(build_optimizer(nn.Linear(2, 2), cfg), cfg)
    old.apply(8)
    state = old.state_dict()
    last = math.cos(7 * math.pi * 7 / (16 * 8))  # the rate of iteration 7 of 8
    assert planned_rate(state, 7, kind="cosine", beta1=0.9, decay_beta1=0.5, cosine_fraction=7 / 16) == (
        pytest.approx(last),
        0.9,
    )
    new_cfg = cfg.replace(iterations=16)
    opt = build_optimizer(nn.Linear(2, 2), new_cfg)
    new = IterationSchedule(opt, new_cfg)
    new.extend = "continue"
    new.load_state_dict(state)
    lrs = []
    for t in range(8, 17):
        new.apply(t)
        lrs.append(opt.param_groups[0]["lr"])
    planned = [math.cos(7 * math.pi * t / (16 * 16)) for t in range(8, 17)]
    assert lrs == pytest.approx([min(last, p) for p in planned])
    # the step schedule does not depend on the total: an extension goes on with the same plan
    step = TrainConfig(iterations=8, schedule="step", lr_decay=0.5, lr_decay_every=3)
    old = IterationSchedule(build_optimizer(nn.Linear(2, 2), step), step)
    old.apply(8)
    longer = step.replace(iterations=16)
    opt = build_optimizer(nn.Linear(2, 2), longer)
    new = IterationSchedule(opt, longer)
    new.extend = "continue"
    new.load_state_dict(old.state_dict())
    assert opt.param_groups[0]["lr"] == 1e-3 * 0.5 ** (8 // 3)


class _StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, **kwargs):
        if kwargs["step"] == self.step:
            kwargs["trainer"].should_stop = True


@pytest.mark.parametrize(
    "options",
    [
        {"schedule": "step", "lr_decay": 0.5, "lr_decay_every": 3, "warmup_iters": 6, "warmup_shape": "sigmoid"},
        {"schedule": "cosine", "cosine_fraction": 7 / 16, "optimizer": "sgd", "lr": 0.05},
    ],
    ids=["step-sigmoid", "cosine-7/16"],
)
def test_resume_with_the_new_schedules_is_bitwise_identical(options, moons, mlp, tiny, same_state, tmp_path):
    run = tiny(iterations=10, eval_every=5, log_every=2, **options)
    full = mlp(0, batch_norm=True)
    expected = Trainer(full, moons, method="vat", **run).fit()

    first = Trainer(mlp(0, batch_norm=True), moons, method="vat", callbacks=[_StopAt(4)], **run)
    assert first.fit().steps == 4
    path = save_checkpoint(first.state_dict(), tmp_path / "state.pt")

    torch.manual_seed(1234)
    resumed_model = mlp(7, batch_norm=True)
    resumed = Trainer(resumed_model, moons, method="vat", **run)
    result = resumed.fit(resume=str(path))
    same_state(full, resumed_model)
    assert result.history == expected.history
    # the schedule did act: the rate after the run is the formula's
    lr = resumed.optimizer.param_groups[0]["lr"]
    if options["schedule"] == "step":
        assert lr == 1e-3 * 0.5 ** (10 // 3)
    else:
        assert lr == pytest.approx(0.05 * math.cos(7 * math.pi / 16))
