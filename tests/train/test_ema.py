"""The exponential moving average of the weights: the average, evaluation on it, checkpoints, resume."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from torchvat.train import Callback, TrainConfig, Trainer, load_checkpoint, save_checkpoint
from torchvat.train.ema import WeightEMA

from .conftest import assert_same_tree, make_mlp


def same(a, b) -> None:
    """Two state dicts (``OrderedDict`` or ``dict``) hold the same tensors, bitwise."""
    assert_same_tree(dict(a), dict(b))


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, **kwargs):
        if kwargs["step"] == self.step:
            kwargs["trainer"].should_stop = True


def test_the_average_follows_its_formula_and_copies_the_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = WeightEMA(model, decay=0.75)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    model(torch.randn(8, 3))  # new running statistics
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for name, p in ema.module.named_parameters():
        expected = 0.75 * start[name] + 0.25 * dict(model.named_parameters())[name]
        assert torch.allclose(p, expected, atol=1e-6), name
        assert not p.requires_grad
    for name, b in ema.module.named_buffers():  # copied, not averaged
        assert torch.equal(b, dict(model.named_buffers())[name]), name
    assert not ema.module.training and int(ema.updates) == 1


def test_a_skipped_step_leaves_the_average_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = WeightEMA(model, decay=0.5)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    model(torch.randn(8, 3))
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model, ok=torch.tensor(False))
    same(ema.module.state_dict(), before)
    assert int(ema.updates) == 0


@pytest.mark.parametrize("decay", [0, 0.0, 1, 1.0, -0.5, math.nan, True, "0.9"])
def test_an_invalid_decay_is_refused_naming_it(decay):
    with pytest.raises(ValueError, match=r"ema must be None or a number in \(0, 1\), got"):
        TrainConfig(ema=decay)
    with pytest.raises(ValueError, match=r"ema must be None or a number in \(0, 1\), got"):
        WeightEMA(nn.Linear(1, 1), decay)


def test_evaluation_metrics_and_best_use_the_average(moons, tiny, tmp_path):
    model = make_mlp(0, batch_norm=True)
    trainer = Trainer(model, moons, method="vat", ema=0.9, **tiny(out_dir=str(tmp_path)))
    result = trainer.fit()
    assert trainer.ema is not None and int(trainer.ema.updates) == 12

    def error(net: nn.Module) -> float:
        net.eval()
        with torch.no_grad():
            return float((net(moons.x_test).argmax(1) != moons.y_test).float().mean())

    assert result.final["test_error"] == pytest.approx(error(trainer.ema.module))
    assert trainer.evaluate(moons.x_test, moons.y_test)["error"] == pytest.approx(error(trainer.ema.module))
    raw = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert not all(torch.equal(raw[k], v) for k, v in trainer.ema.module.state_dict().items())
    best = load_checkpoint(result.paths["best"])  # both sets of weights, the choice made on the average's error
    assert best["ema"]["decay"] == 0.9 and set(best["ema"]["model"]) == set(best["model"])
    assert best["best"]["test_error"] == min(r["test_error"] for r in result.history)
    last = load_checkpoint(result.paths["last"])
    same(last["model"], raw)
    same(last["ema"]["model"], trainer.ema.module.state_dict())


def test_resume_is_bitwise_for_the_raw_and_the_averaged_weights(moons, tiny, tmp_path):
    options = tiny(iterations=12, eval_every=4, log_every=3, ema=0.8)
    full = Trainer(make_mlp(0, batch_norm=True, dropout=0.2), moons, method="vat", **options)
    expected = full.fit()

    first = Trainer(make_mlp(0, batch_norm=True, dropout=0.2), moons, method="vat", callbacks=[StopAt(5)], **options)
    assert first.fit().steps == 5
    path = save_checkpoint(first.state_dict(), tmp_path / "state.pt")

    torch.manual_seed(1234)  # as in a new process
    resumed = Trainer(make_mlp(7, batch_norm=True, dropout=0.2), moons, method="vat", **options)
    result = resumed.fit(resume=str(path))

    same(resumed.model.state_dict(), full.model.state_dict())
    assert full.ema is not None and resumed.ema is not None
    same(resumed.ema.module.state_dict(), full.ema.module.state_dict())
    assert int(resumed.ema.updates) == int(full.ema.updates) == 12
    assert result.history == expected.history


def test_a_state_saved_before_the_average_existed_still_loads(moons, tiny, caplog):
    first = Trainer(make_mlp(0, batch_norm=True), moons, method="vat", **tiny(iterations=4))
    first.fit()
    state = first.state_dict()
    del state["ema"]  # the layout before this key
    trainer = Trainer(make_mlp(3, batch_norm=True), moons, method="vat", ema=0.99, **tiny(iterations=6))
    with caplog.at_level(logging.INFO, logger="torchvat.train.trainer"):
        trainer.load_state_dict(state)
    assert "has no EMA weights; the average starts from its weights" in caplog.text
    assert trainer.ema is not None
    same(trainer.ema.module.state_dict(), trainer.model.state_dict())
    assert trainer.fit().steps == 6

    plain = Trainer(make_mlp(3, batch_norm=True), moons, method="vat", **tiny(iterations=6))
    plain.load_state_dict(trainer.state_dict())  # a saved average and no ema now: the raw weights train on
    assert plain.ema is None and plain.state_dict()["ema"] is None


def test_a_saved_average_that_does_not_fit_is_refused_before_anything_changes(moons, tiny):
    trainer = Trainer(make_mlp(0), moons, method="vat", ema=0.9, **tiny(iterations=2))
    trainer.fit()
    state = trainer.state_dict()
    state["ema"]["model"] = {k: v for k, v in state["ema"]["model"].items() if not k.startswith("4.")}
    other = Trainer(make_mlp(5), moons, method="vat", ema=0.9, **tiny(iterations=2))
    before = {k: v.clone() for k, v in other.model.state_dict().items()}
    with pytest.raises(ValueError, match=r"the checkpoint's EMA weights do not fit: .*lacks"):
        other.load_state_dict(state)
    same(other.model.state_dict(), before)
    assert other.step == 0


class NaNAt(Callback):
    """Makes the model's outputs NaN at the given iterations (0-based)."""

    def __init__(self, model: Poisoned, steps: set[int]) -> None:
        self.model, self.steps = model, steps

    def on_step_begin(self, **kwargs):
        self.model.poison = kwargs["step"] in self.steps


class Poisoned(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = make_mlp(0, batch_norm=True)
        self.poison = False

    def forward(self, x):
        out = self.net(x)
        return out * math.nan if self.poison else out


def test_steps_skipped_for_a_nonfinite_loss_are_not_averaged(moons, tiny):
    model = Poisoned()
    snapshots = {}

    class Snap(Callback):
        def on_step_end(self, **kwargs):
            ema = kwargs["trainer"].ema
            snapshots[kwargs["step"]] = {k: v.clone() for k, v in ema.module.state_dict().items()}

    trainer = Trainer(
        model, moons, method="vat", ema=0.9, nonfinite="skip", callbacks=[NaNAt(model, {4, 5}), Snap()], **tiny()
    )
    result = trainer.fit()
    assert result.skipped_steps == 2 and trainer.ema is not None and int(trainer.ema.updates) == 10
    same(snapshots[4], snapshots[6])
    assert all(torch.isfinite(v).all() for v in trainer.ema.module.state_dict().values())
