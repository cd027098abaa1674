"""``amp="fp16"``: float16 autocast with a GradScaler; the scaler's skipped steps are not failures."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import torchvat.train.trainer as trainer_module
from torchvat.train import Callback, Trainer, load_checkpoint, save_checkpoint
from torchvat.train.trainer import NonFiniteLossError

from .conftest import assert_same_tree, make_mlp


def same(a, b) -> None:
    assert_same_tree(dict(a), dict(b))


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, **kwargs):
        if kwargs["step"] == self.step:
            kwargs["trainer"].should_stop = True


def fp16_trainer(moons, tiny, *, init_scale: float, seed: int = 0, **options) -> Trainer:
    """A trainer under fp16 whose scaler starts at ``init_scale`` (a large one overflows the first steps)."""
    trainer = Trainer(make_mlp(seed, batch_norm=True, dropout=0.2), moons, method="vat", amp="fp16", **tiny(**options))
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    return trainer


@pytest.mark.parametrize("on_device", [True, False])
def test_steps_the_scaler_skips_do_not_stop_training_and_are_counted_apart(on_device, moons, tiny, monkeypatch):
    if not on_device:  # an optimizer that cannot skip on the device flag: the check reads it on the host
        monkeypatch.setattr(trainer_module, "supports_found_inf", lambda optimizer: False)
    logs = []

    class Logs(Callback):
        def on_step_end(self, **kwargs):
            if kwargs["logs"] is not None:
                logs.append(kwargs["logs"])

    trainer = fp16_trainer(moons, tiny, init_scale=2.0**30, ema=0.9, callbacks=None)
    trainer.callbacks.append(Logs())
    result = trainer.fit()  # nonfinite="stop", the default
    assert result.steps == 12 and not result.stopped_early
    assert result.skipped_steps == 0 and result.scaler_skipped > 0
    assert trainer.ema is not None and int(trainer.ema.updates) == 12 - result.scaler_skipped
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())
    assert logs[-1]["scaler_skipped"] == result.scaler_skipped and logs[-1]["loss_scale"] < 2.0**30
    assert all(math.isfinite(v) for r in result.history for v in r.values())


def test_a_nonfinite_loss_under_fp16_is_still_a_failure(moons, tiny):
    class NaNAfter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.poison = make_mlp(0), False

        def forward(self, x):
            out = self.net(x)
            return out * math.nan if self.poison else out

    class PoisonAt(Callback):
        def on_step_begin(self, **kwargs):
            model.poison = kwargs["step"] == 3

    model = NaNAfter()
    trainer = Trainer(model, moons, method="vat", amp="fp16", callbacks=[PoisonAt()], **tiny())
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at iteration 4"):
        trainer.fit()
    assert trainer.step == 3 and trainer.read_scaler_skipped() == 0


def test_resume_under_fp16_is_bitwise_with_the_scaler_state(moons, tiny, tmp_path):
    options = {"iterations": 12, "eval_every": 4, "log_every": 3, "ema": 0.8, "out_dir": None}
    full = fp16_trainer(moons, tiny, init_scale=2.0**22, **options)
    expected = full.fit()
    assert 2 < expected.scaler_skipped < 12  # skips before and after the interruption

    first = fp16_trainer(moons, tiny, init_scale=2.0**22, **options)
    first.callbacks.append(StopAt(2))
    assert first.fit().steps == 2
    path = save_checkpoint(first.state_dict(), tmp_path / "state.pt")
    saved = load_checkpoint(path)
    assert saved["scaler"]["scale"] < 2.0**22 and saved["scaler_skipped"] == 2

    torch.manual_seed(99)  # as in a new process; the scaler's own start is replaced by the saved one
    resumed = Trainer(make_mlp(5, batch_norm=True, dropout=0.2), moons, method="vat", amp="fp16", **tiny(**options))
    result = resumed.fit(resume=str(path))
    same(resumed.model.state_dict(), full.model.state_dict())
    assert resumed.ema is not None and full.ema is not None
    same(resumed.ema.module.state_dict(), full.ema.module.state_dict())
    assert resumed.scaler is not None and full.scaler is not None
    assert resumed.scaler.state_dict() == full.scaler.state_dict()
    assert result.history == expected.history and result.scaler_skipped == expected.scaler_skipped


def test_fp16_is_refused_for_half_precision_parameters(moons):
    with pytest.raises(ValueError, match=r"amp='fp16' needs float32 parameters .* got parameters in torch.float16"):
        Trainer(
            make_mlp(0).half(),
            x_labeled=moons.x_labeled.half(),
            y_labeled=moons.y_labeled,
            method="supervised",
            amp="fp16",
            progress=False,
        )


def test_the_run_file_logs_the_scaler(moons, tiny, tmp_path):
    trainer = fp16_trainer(moons, tiny, init_scale=2.0**24, out_dir=str(tmp_path))
    trainer.fit()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in lines if "scaler_skipped" in r]
    assert logged and logged[-1]["scaler_skipped"] == trainer.scaler_skipped > 0
