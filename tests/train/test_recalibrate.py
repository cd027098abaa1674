"""BatchNorm statistics re-estimated before evaluation (``bn_recalibrate``, issue 18)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchvat.train import Callback, TrainConfig, Trainer, save_checkpoint
from torchvat.train.recalibrate import recalibrate_batchnorm, recalibration_batches, swapped_buffers

from .conftest import assert_same_tree, make_mlp


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, **kwargs):
        if kwargs["step"] == self.step:
            kwargs["trainer"].should_stop = True


def _net() -> nn.Module:
    return make_mlp(0, batch_norm=True, dropout=0.2)


def test_the_cumulative_average_is_the_mean_of_the_batch_statistics_and_the_module_is_left_as_it_was():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3, momentum=0.01)
    model = nn.Sequential(nn.Identity(), bn).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [torch.randn(5, 3) * (i + 1) + i for i in range(4)]
    rng = torch.get_rng_state()
    stats = recalibrate_batchnorm(model, batches, seed=3)
    torch.testing.assert_close(stats["1.running_mean"], torch.stack([b.mean(0) for b in batches]).mean(0))
    torch.testing.assert_close(stats["1.running_var"], torch.stack([b.var(0) for b in batches]).mean(0))
    assert int(stats["1.num_batches_tracked"]) == 4
    assert_same_tree(dict(model.state_dict()), before)
    assert bn.momentum == 0.01 and not bn.training and not model.training
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random stream is untouched
    with swapped_buffers(model, stats):
        assert torch.equal(bn.running_mean, stats["1.running_mean"])
    assert_same_tree(dict(model.state_dict()), before)


def test_the_batches_are_fixed_by_the_seed_and_cycle_a_small_split():
    a, b = recalibration_batches(7, 5, 3, seed=1), recalibration_batches(7, 5, 3, seed=1)
    assert [x.tolist() for x in a] == [x.tolist() for x in b] and len(a) == 5
    assert all(len(x) == 3 for x in a)
    one_pass = recalibration_batches(7, None, 3, seed=1)
    assert sorted(torch.cat(one_pass).tolist()) == list(range(7)) and [len(x) for x in one_pass] == [3, 3, 1]


def _expected_error(trainer: Trainer, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The error of ``module`` with its statistics re-estimated by hand, as the option promises."""
    cfg = trainer.config
    net = copy.deepcopy(module)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.reset_running_stats()
            m.momentum = None
    source = trainer.x_labeled if cfg.bn_recalibrate == "labeled" else trainer.x_unlabeled
    assert source is not None
    rows = recalibration_batches(
        source.shape[0], cfg.bn_recalibrate_batches, cfg.bn_recalibrate_batch_size, trainer_seed(trainer, 5)
    )
    net.train()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(trainer_seed(trainer, 6))
        for idx in rows:
            net(source[idx])
    net.eval()
    with torch.no_grad():
        return float((net(x).argmax(1) != y).float().mean())


def trainer_seed(trainer: Trainer, stream: int) -> int:
    from torchvat.train.trainer import _seed_for

    return _seed_for(trainer.config.seed, 0, stream)


@pytest.mark.parametrize("split", ["labeled", "unlabeled"])
def test_training_is_unchanged_and_evaluation_uses_the_reestimated_statistics(moons, tiny, split):
    options = tiny(iterations=12, eval_every=4, bn_recalibrate_batches=3, bn_recalibrate_batch_size=8)
    plain = Trainer(_net(), moons, method="vat", **options)
    base = plain.fit()
    trainer = Trainer(_net(), moons, method="vat", bn_recalibrate=split, **options)
    result = trainer.fit()
    # the same training: losses, weights and running statistics, bitwise
    for got, want in zip(result.history, base.history, strict=True):
        assert {k: v for k, v in got.items() if k.startswith("train_")} == {
            k: v for k, v in want.items() if k.startswith("train_")
        }
    assert_same_tree(dict(trainer.model.state_dict()), dict(plain.model.state_dict()))
    # the evaluation: the statistics re-estimated on the split, not the running averages
    expected = _expected_error(trainer, trainer.model, moons.x_test, moons.y_test)
    assert result.final["test_error"] == pytest.approx(expected)
    assert trainer.evaluate(moons.x_test, moons.y_test)["error"] == pytest.approx(expected)
    assert result.final["test_loss"] != base.final["test_loss"]  # the option does change the evaluation
    stats = trainer.recalibrated_statistics()
    assert stats is not None and not torch.equal(stats["1.running_mean"], trainer.model[1].running_mean)
    assert trainer.state_dict()["bn_recalibrated"] is not None


def test_resume_with_recalibration_is_bitwise_the_uninterrupted_run(moons, tiny, tmp_path):
    options = tiny(iterations=12, eval_every=4, log_every=3, bn_recalibrate="labeled", bn_recalibrate_batches=2)
    full = Trainer(_net(), moons, method="vat", **options)
    expected = full.fit()
    first = Trainer(_net(), moons, method="vat", callbacks=[StopAt(6)], **options)
    assert first.fit().steps == 6
    path = save_checkpoint(first.state_dict(), tmp_path / "state.pt")
    torch.manual_seed(1234)  # as in a new process
    resumed = Trainer(make_mlp(7, batch_norm=True, dropout=0.2), moons, method="vat", **options)
    result = resumed.fit(resume=str(path))
    assert_same_tree(dict(resumed.model.state_dict()), dict(full.model.state_dict()))
    assert result.history == expected.history


def test_with_ema_the_averaged_model_is_recalibrated(moons, tiny):
    options = tiny(iterations=8, eval_every=4, ema=0.5, bn_recalibrate="unlabeled", bn_recalibrate_batches=None)
    options["bn_recalibrate_batch_size"] = 64
    trainer = Trainer(_net(), moons, method="vat", **options)
    result = trainer.fit()
    assert trainer.ema is not None
    expected = _expected_error(trainer, trainer.ema.module, moons.x_test, moons.y_test)
    assert result.final["test_error"] == pytest.approx(expected)
    loss = F.cross_entropy(trainer.predict_logits(moons.x_test), moons.y_test)
    assert result.final["test_loss"] == pytest.approx(float(loss))


def test_bad_values_and_a_missing_split_are_refused_and_a_model_without_batchnorm_warns(moons, tiny):
    with pytest.raises(ValueError, match=r"bn_recalibrate must be one of None, 'labeled', 'unlabeled', got 'test'"):
        TrainConfig(bn_recalibrate="test")
    with pytest.raises(ValueError, match=r"bn_recalibrate_batches must be an integer >= 1 or None, got 0"):
        TrainConfig(bn_recalibrate_batches=0)
    with pytest.raises(ValueError, match=r"bn_recalibrate='unlabeled' needs x_unlabeled, got None"):
        Trainer(
            _net(),
            x_labeled=moons.x_labeled,
            y_labeled=moons.y_labeled,
            method="supervised",
            bn_recalibrate="unlabeled",
            **tiny(),
        )
    with pytest.warns(UserWarning, match="no BatchNorm layer with running statistics"):
        Trainer(make_mlp(0), moons, method="vat", bn_recalibrate="labeled", **tiny())
