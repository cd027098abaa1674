"""SIGINT/SIGTERM: the run stops after the current iteration, writes its checkpoint, says how to resume."""

from __future__ import annotations

import logging
import os
import re
import signal
import time

import pytest

from torchvat.train import Callback, Trainer, load_checkpoint

from ._helpers import CLI_TIMEOUT, TRAIN_ARGS, assert_same_state, make_mlp, run_cli, small, start_cli


@pytest.fixture(autouse=True)
def _python_sigint_handler():
    """Python's own SIGINT handler, as in an interactive run.

    A process started in the background by a non-interactive shell (as CI may be) inherits SIGINT
    ignored, and Python then installs no KeyboardInterrupt handler; these tests are about what
    torchvat does on top of Python's handler, so they install it and restore what they found.
    """
    found = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, found)


class SendSignal(Callback):
    def __init__(self, at: int, signum: int, times: int = 1) -> None:
        self.at, self.signum, self.times = at, signum, times

    def on_step_end(self, **kwargs):
        if kwargs["step"] == self.at:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_and_resume_is_exact(signum, moons, tmp_path, caplog):
    options = small(iterations=12, checkpoint_every=100, out_dir=str(tmp_path / "run"))
    expected_model = make_mlp(0)
    expected = Trainer(expected_model, moons, method="vat", **{**options, "out_dir": str(tmp_path / "ref")}).fit()
    before = signal.getsignal(signum)

    with caplog.at_level(logging.WARNING, logger="torchvat.train.trainer"):
        result = Trainer(make_mlp(0), moons, method="vat", callbacks=[SendSignal(5, signum)], **options).fit()
    assert result.interrupted == signal.Signals(signum).name
    assert result.steps == 5 and result.stopped_early
    assert signal.getsignal(signum) is before  # handlers restored
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 5  # final checkpoint written
    assert re.search(rf"{signal.Signals(signum).name} received: training stopped after iteration 5 of 12", caplog.text)
    assert "resume with Trainer.fit(resume=PATH)" in caplog.text

    resumed_model = make_mlp(9)
    resumed = Trainer(resumed_model, moons, method="vat", **options).fit(resume=tmp_path / "run" / "last.pt")
    assert_same_state(resumed_model.state_dict(), expected_model.state_dict())
    assert resumed.history == expected.history and resumed.interrupted is None


def test_second_sigint_interrupts_at_once(moons):
    trainer = Trainer(make_mlp(0), moons, method="vat", callbacks=[SendSignal(3, signal.SIGINT, times=2)], **small())
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert trainer.step == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_catch_signals_false_leaves_handlers_alone(moons):
    trainer = Trainer(
        make_mlp(0), moons, method="vat", catch_signals=False, callbacks=[SendSignal(2, signal.SIGINT)], **small()
    )
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert trainer.step == 2


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_cli_signal_writes_checkpoint_and_prints_resume_command(signum, code, tmp_path):
    args = [a if a != "200" else "1000000" for a in TRAIN_ARGS]  # far longer than the test
    proc = start_cli([*args, "--out", "run"], tmp_path)
    last = tmp_path / "run" / "last.pt"
    deadline = time.monotonic() + CLI_TIMEOUT
    while not last.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=CLI_TIMEOUT)
    assert proc.returncode == code, err
    name = signal.Signals(signum).name
    match = re.search(rf"{name} received, stopped after iteration (\d+) of 1000000; the state is saved in (\S+)\.", err)
    assert match, err
    assert "Resume with: torchvat train --resume --out run" in err
    step = int(match.group(1))
    assert load_checkpoint(last)["step"] == step
    # the printed command works (with fewer iterations, to end quickly)
    done = run_cli(["train", "--resume", "--out", "run", "--iters", str(step + 3), "--no-progress"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(last)["step"] == step + 3
