"""NaN/Inf in the loss or the gradients: stop (default) or skip; never NaN weights; no host read per iteration."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from torchvat.train import Callback, TrainConfig, Trainer, load_checkpoint
from torchvat.train.trainer import NonFiniteLossError

from ._helpers import assert_same_state, make_mlp, small


class Poisonable(nn.Module):
    """An MLP (with BatchNorm) whose outputs or gradients become NaN while ``poison`` is set.

    ``rows`` limits the poisoned outputs to forward passes of that many rows (to poison one
    loss term only); ``grad`` poisons the first layer's weight gradient instead.
    """

    def __init__(self, rows: int | None = None, grad: bool = False) -> None:
        super().__init__()
        self.net = make_mlp(0, batch_norm=True)
        self.poison, self.rows, self.grad = False, rows, grad
        self.net[0].weight.register_hook(lambda g: g * math.nan if self.poison and self.grad else g)

    def forward(self, x):
        out = self.net(x)
        if self.poison and not self.grad and (self.rows is None or x.shape[0] == self.rows):
            out = out * math.nan
        return out


class PoisonAt(Callback):
    def __init__(self, model: Poisonable, steps: set[int]) -> None:
        self.model, self.steps = model, steps

    def on_step_begin(self, **kwargs):
        self.model.poison = kwargs["step"] in self.steps


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, **kwargs):
        kwargs["trainer"].should_stop = kwargs["step"] == self.step


def _finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def test_default_policy_is_stop():
    assert TrainConfig().nonfinite == "stop"


def test_stop_names_iteration_and_term_and_saves_finite_weights(moons, tmp_path):
    # separate clean passes (not the BatchNorm model's default joint one), so that the unlabeled rows'
    # passes have 16 rows of their own
    reference = Poisonable()
    Trainer(reference, moons, method="vat", callbacks=[StopAt(3)], **small(regularize="unlabeled")).fit()

    model = Poisonable(rows=16)  # the unlabeled perturbed passes (16 rows): the 'vat' term only
    trainer = Trainer(
        model,
        moons,
        method="vat",
        callbacks=[PoisonAt(model, {3})],
        **small(out_dir=str(tmp_path), regularize="unlabeled"),
    )
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at iteration 4 .*loss term\(s\) 'vat'") as info:
        trainer.fit()
    assert info.value.iteration == 4 and math.isnan(info.value.terms["vat"]) and math.isfinite(info.value.terms["ce"])
    assert "the update was not applied" in str(info.value) and str(tmp_path / "last.pt") in str(info.value)
    assert trainer.step == 3
    # weights and BatchNorm statistics are those after iteration 3, and finite
    assert_same_state(model.state_dict(), reference.state_dict())
    saved = load_checkpoint(tmp_path / "last.pt")
    assert saved["step"] == 3
    assert_same_state(saved["model"], reference.state_dict())


def test_stop_on_nonfinite_gradient_names_the_parameter(moons):
    model = Poisonable(grad=True)
    trainer = Trainer(model, moons, method="vat", callbacks=[PoisonAt(model, {1})], **small())
    with pytest.raises(NonFiniteLossError, match=r"non-finite gradients at iteration 2 .*net\.0\.weight"):
        trainer.fit()
    assert _finite(model)


def test_skip_continues_without_the_bad_update(moons, caplog):
    model = Poisonable()
    snapshots = {}

    class Snap(Callback):
        def on_step_end(self, **kwargs):
            snapshots[kwargs["step"]] = {k: v.clone() for k, v in model.state_dict().items()}

    trainer = Trainer(
        model, moons, method="vat", nonfinite="skip", callbacks=[PoisonAt(model, {4, 5}), Snap()], **small()
    )
    with caplog.at_level(logging.WARNING, logger="torchvat.train.trainer"):
        result = trainer.fit()
    assert result.steps == 12 and result.skipped_steps == 2
    # reported at the next logging iteration (6), without a host read per iteration
    assert "2 iteration(s) skipped (nonfinite='skip') between iterations 5 and 6" in caplog.text
    assert "the first: non-finite loss at iteration 5" in caplog.text
    assert_same_state(snapshots[4], snapshots[6])  # iterations 5 and 6 changed nothing (BatchNorm included)
    assert _finite(model)
    assert all(math.isfinite(v) for r in result.history for v in r.values())
    assert trainer.state_dict()["skipped_steps"] == 2


def test_ignore_lets_nan_through(moons):
    model = Poisonable()
    Trainer(model, moons, method="vat", nonfinite="ignore", callbacks=[PoisonAt(model, {2})], **small()).fit()
    assert not _finite(model)  # documented: "ignore" does not protect the weights


def test_invalid_policy_is_refused():
    with pytest.raises(ValueError, match="nonfinite must be one of 'stop', 'skip', 'ignore', got 'drop'"):
        TrainConfig(nonfinite="drop")


class HostReads:
    """Counts reads of tensor values on the host while active."""

    NAMES = ("item", "tolist", "__bool__", "__float__", "__int__")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def read(tensor, *args, _original=original, **kwargs):
                self.count += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, read)


def test_checked_iterations_read_nothing_on_the_host(moons, monkeypatch):
    model = Poisonable()
    trainer = Trainer(model, moons, method="vat", **small(iterations=20, log_every=20, eval_every=20))
    batches = [trainer.next_batch() for _ in range(5)]
    trainer.train_step(batches[0])  # the first step checks the labels once
    reads = HostReads(monkeypatch)
    model.poison = True
    for batch in batches[1:]:
        trainer.train_step(batch)
    assert reads.count == 0
    monkeypatch.undo()
    assert bool(trainer.last_step_ok) is False and _finite(model)


def test_stop_is_reported_by_a_checkpoint_between_logging_iterations(moons, tmp_path):
    from torchvat.train import Checkpoint

    reference = Poisonable()
    ref = Trainer(reference, moons, method="vat", callbacks=[StopAt(5)], **small(log_every=100))
    ref.fit()
    model = Poisonable()
    trainer = Trainer(
        model,
        moons,
        method="vat",
        callbacks=[PoisonAt(model, {5}), Checkpoint(tmp_path, every=1)],
        **small(log_every=100, eval_every=100),
    )
    with pytest.raises(NonFiniteLossError, match="non-finite loss at iteration 6") as info:
        trainer.fit()
    assert info.value.iteration == 6 and trainer.step == 5
    saved = load_checkpoint(tmp_path / "last.pt")
    assert saved["step"] == 5
    assert_same_state(saved["model"], reference.state_dict())
    assert_same_state(saved["optimizer"]["state"], ref.optimizer.state_dict()["state"])


def test_stop_defers_to_the_next_logging_iteration_and_applies_nothing_after_the_failure(moons):
    reference = Poisonable()
    ref = Trainer(reference, moons, method="vat", callbacks=[StopAt(2)], **small(log_every=6))
    ref.fit()
    model = Poisonable()
    trainer = Trainer(model, moons, method="vat", callbacks=[PoisonAt(model, {2})], **small(log_every=6))
    with pytest.raises(NonFiniteLossError, match="non-finite loss at iteration 3"):
        trainer.fit()
    # iterations 4-6 ran with finite losses, but none of their updates was applied
    assert trainer.step == 2
    assert_same_state(model.state_dict(), reference.state_dict())
    assert_same_state(trainer.optimizer.state_dict()["state"], ref.optimizer.state_dict()["state"])


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_skip_with_fused_sgd_leaves_parameters_and_momentum_unchanged(moons, momentum):
    model = Poisonable()
    trainer = Trainer(model, moons, method="vat", optimizer="sgd", momentum=momentum, nonfinite="skip", **small())
    assert trainer.optimizer.param_groups[0]["fused"]
    batches = [trainer.next_batch() for _ in range(3)]
    trainer.train_step(batches[0])
    before = {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()}
    opt_before = [{k: v.clone() for k, v in st.items()} for st in trainer.optimizer.state.values()]
    model.poison = True
    trainer.train_step(batches[1])
    assert_same_state(dict(model.state_dict()), before)
    assert_same_state([dict(st) for st in trainer.optimizer.state.values()], opt_before)
    model.poison = False
    trainer.train_step(batches[2])
    assert _finite(model) and not torch.equal(model.net[0].weight, before["net.0.weight"])


def test_an_optimizer_without_a_device_skip_is_checked_at_once(moons):
    from torchvat.train import IterationSchedule

    model = Poisonable()
    trainer = Trainer(model, moons, method="vat", callbacks=[PoisonAt(model, {1})], **small(log_every=100))
    trainer.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # not fused: no found_inf
    trainer.schedule = IterationSchedule(trainer.optimizer, trainer.config)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at iteration 2"):
        trainer.fit()
    assert trainer.step == 1 and _finite(model)


class CountingPoisonable(Poisonable):
    """``Poisonable`` with a buffer the module replaces on every forward pass (not in place)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls = self.calls + 1
        return super().forward(x)


def test_a_skipped_iteration_restores_buffers_the_model_replaced(moons):
    model = CountingPoisonable()
    trainer = Trainer(model, moons, nonfinite="skip", **small(iterations=1))
    trainer.train_step(trainer.next_batch())
    done = float(model.calls)
    model.poison = True
    trainer.train_step(trainer.next_batch())
    model.poison = False
    assert not bool(trainer.last_step_ok)
    assert float(model.calls) == done  # the failed iteration's passes are not counted
    trainer.train_step(trainer.next_batch())
    assert float(model.calls) == 2 * done


def test_a_term_returned_on_some_iterations_is_named_when_it_fails(moons, sometimes_method):
    """A custom method's term that is there on some iterations only: its NaN is named, not blamed on the gradients."""
    method = sometimes_method(nan_at=2)  # the failing iteration 2 has l2, iteration 3 (read at 4) does not
    trainer = Trainer(make_mlp(0), moons, method=method, **small(iterations=8, log_every=4, eval_every=8))
    match = r"non-finite loss at iteration 2 \(step 1 done\): loss term\(s\) 'l2' \(ce=0\.\d+, l2=nan\)"
    with pytest.raises(NonFiniteLossError, match=match) as info:
        trainer.fit()
    assert info.value.iteration == 2 and math.isnan(info.value.terms["l2"]) and info.value.terms["ce"] > 0
