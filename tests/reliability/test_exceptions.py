"""An exception in fit other than a non-finite loss: files closed, checkpoints kept as they were."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from torchvat.train import Callback, JSONLogger, ProgressBar, Trainer, load_checkpoint

from ._helpers import make_mlp, small


class FailsAt(nn.Module):
    """An MLP whose forward raises at the ``at``-th training call (mid-iteration)."""

    def __init__(self, at: int, error: type[BaseException] = RuntimeError) -> None:
        super().__init__()
        self.net, self.at, self.error, self.calls = make_mlp(0), at, error, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                raise self.error("the model failed")
        return self.net(x)


class Holds(Callback):
    """Keeps the JSON logger's file and the progress bar as they are while training."""

    def __init__(self) -> None:
        self.file = self.bar = None
        self.exceptions: list[BaseException] = []

    def on_step_end(self, **kwargs):
        cbs = kwargs["trainer"].callbacks
        self.file = next((cb._file for cb in cbs if isinstance(cb, JSONLogger)), None)
        self.bar = next(cb.bar for cb in cbs if isinstance(cb, ProgressBar) and cb.bar is not None)

    def on_exception(self, **kwargs):
        self.exceptions.append(kwargs["exception"])


class Broken(Callback):
    def on_exception(self, **kwargs):
        raise OSError("this callback's cleanup failed too")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_exception_in_fit_closes_the_files_and_keeps_the_checkpoints(error, moons, tmp_path, caplog):
    # the clean pass counts as one call, the VAT passes on the unlabeled batch as three more:
    # 4 calls per iteration, so call 23 is inside iteration 6, after the checkpoint of step 4
    model = FailsAt(23, error)
    holds = Holds()
    bar = ProgressBar(force=True)
    options = small(iterations=12, eval_every=4, out_dir=str(tmp_path), catch_signals=False)
    trainer = Trainer(model, moons, method="vat", callbacks=[bar, Broken(), holds], **options)
    before = (tmp_path / "last.pt").exists()
    with caplog.at_level(logging.ERROR, logger="torchvat"), pytest.raises(error, match="the model failed"):
        trainer.fit()
    assert not before and 4 <= trainer.step < 8
    # every callback's on_exception ran, also after the one that failed (which is logged)
    assert [type(e) for e in holds.exceptions] == [error]
    assert "Broken.on_exception failed" in caplog.text
    assert holds.file is not None and holds.file.closed
    assert holds.bar is not None and bar.bar is None
    # no checkpoint from the torn state: last.pt is the one of step 4, no temporary file left
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt", "metrics.jsonl"]
    # and the run resumes from it
    resumed = Trainer(FailsAt(0), moons, method="vat", **options).fit(resume=tmp_path / "last.pt")
    assert resumed.steps == 12


def test_an_exception_in_on_train_end_still_closes_the_other_callbacks(moons, tmp_path):
    class FailsAtEnd(Callback):
        def on_train_end(self, **kwargs):
            raise ValueError("on_train_end failed")

    holds = Holds()
    bar = ProgressBar(force=True)
    trainer = Trainer(make_mlp(0), moons, method="vat", callbacks=[FailsAtEnd(), bar, holds], **small())
    with pytest.raises(ValueError, match="on_train_end failed"):
        trainer.fit()
    assert holds.bar is not None and bar.bar is None
    assert [type(e) for e in holds.exceptions] == [ValueError]


def test_the_first_iteration_failing_leaves_no_checkpoint(moons, tmp_path):
    trainer = Trainer(FailsAt(1), moons, method="vat", **small(out_dir=str(tmp_path)))
    with pytest.raises(RuntimeError, match="the model failed"):
        trainer.fit()
    assert not (tmp_path / "last.pt").exists()
    assert torch.equal(trainer.model.net[0].weight, make_mlp(0)[0].weight)  # nothing was applied


def test_an_exception_in_fit_closes_the_tensorboard_writer(moons, tmp_path):
    pytest.importorskip("tensorboard")
    from torchvat.train import TensorBoardLogger

    trainer = Trainer(FailsAt(9), moons, method="vat", **small(out_dir=str(tmp_path), tensorboard=True))
    (board,) = [cb for cb in trainer.callbacks if isinstance(cb, TensorBoardLogger)]
    opened = []

    class Grab(Callback):
        def on_step_end(self, **kwargs):
            opened.append(board.writer)

    trainer.callbacks.append(Grab())
    with pytest.raises(RuntimeError, match="the model failed"):
        trainer.fit()
    assert opened and opened[0] is not None and board.writer is None
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
