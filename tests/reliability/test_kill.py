"""SIGKILL at several points of a real ``torchvat train`` run, then ``--resume``.

The resumed run must end bitwise equal (weights, optimizer, random state, history and
``metrics.jsonl``) to an uninterrupted one, and the last good checkpoint must survive every
kill. Points: during a checkpoint write (temporary file complete, nothing renamed), between
keeping the previous version and moving the new file in place, between checkpoints (after
evaluation lines were logged past the last checkpoint), and at seeded random times.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from torchvat.train import load_checkpoint

from ._helpers import (
    CLI_TIMEOUT,
    TRAIN_ARGS,
    assert_same_state,
    final_state,
    metrics_lines,
    run_cli,
    start_cli,
)

pytestmark = pytest.mark.slow

RESUME_ARGS = ["train", "--resume", "--out", "run", "--no-progress", "--threads", "1"]


def _wait_for(path: Path, proc, timeout: float = CLI_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the run ended (rc {proc.returncode}) before {path.name} appeared: {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


def _kill(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=CLI_TIMEOUT)
    assert proc.returncode == -signal.SIGKILL


def _resume_and_compare(base: Path, reference: Path) -> None:
    done = run_cli(RESUME_ARGS, base)
    assert done.returncode == 0, done.stderr
    run = base / "run"
    resumed, expected = final_state(run), final_state(reference)
    assert resumed["step"] == expected["step"] == 200
    for key in ("model", "optimizer", "schedule", "rng", "generator", "samplers", "accumulators"):
        assert_same_state(resumed[key], expected[key])
    assert resumed["history"] == expected["history"]
    assert resumed["best"] == expected["best"]
    assert metrics_lines(run) == metrics_lines(reference)
    assert_same_state(load_checkpoint(run / "best.pt")["model"], load_checkpoint(reference / "best.pt")["model"])
    assert not list(run.glob(".*.tmp")), "stale temporary files were not cleaned up"


@pytest.mark.parametrize("phase", ["written", "rotated"])
def test_kill_during_checkpoint_write(phase, tmp_path, uninterrupted_cli_run):
    marker = tmp_path / "paused"
    proc = start_cli(
        [*TRAIN_ARGS, "--out", "run"], tmp_path, TORCHVAT_TEST_CHECKPOINT_PAUSE=f"last.pt:15:{phase}:{marker}"
    )
    _wait_for(marker, proc)
    _kill(proc)
    run = tmp_path / "run"
    # the last good checkpoint is intact: step 10, checksum verified
    assert load_checkpoint(run / "last.pt")["step"] == 10
    assert load_checkpoint(run / "last.prev.pt")["step"] == (10 if phase == "rotated" else 5)
    assert len(list(run.glob(".last.pt.*.tmp"))) == 1  # the new file never replaced last.pt
    _resume_and_compare(tmp_path, uninterrupted_cli_run)


def test_kill_between_checkpoints_after_logging(tmp_path, uninterrupted_cli_run):
    # paused while writing best.pt at step 20: metrics.jsonl already has the evaluation line of
    # step 20, last.pt holds step 15; the resumed run must drop that line and recompute it
    marker = tmp_path / "paused"
    proc = start_cli(
        [*TRAIN_ARGS, "--out", "run"], tmp_path, TORCHVAT_TEST_CHECKPOINT_PAUSE=f"best.pt:20:written:{marker}"
    )
    _wait_for(marker, proc)
    _kill(proc)
    run = tmp_path / "run"
    assert load_checkpoint(run / "last.pt")["step"] == 15
    assert max(r["step"] for r in metrics_lines(run)) == 20
    _resume_and_compare(tmp_path, uninterrupted_cli_run)


@pytest.mark.parametrize("seed", [0, 1])
def test_kill_at_random_time(seed, tmp_path, uninterrupted_cli_run):
    proc = start_cli([*TRAIN_ARGS, "--out", "run"], tmp_path)
    _wait_for(tmp_path / "run" / "last.pt", proc)
    time.sleep(random.Random(seed).uniform(0.0, 0.3))
    if proc.poll() is not None:
        pytest.fail("the run finished before the kill; make it longer")
    _kill(proc)
    run = tmp_path / "run"
    step = load_checkpoint(run / "last.pt")["step"]  # loads: never damaged
    assert 5 <= step < 200
    if (run / "last.prev.pt").exists():
        assert load_checkpoint(run / "last.prev.pt")["step"] in (step, step - 5)
    _resume_and_compare(tmp_path, uninterrupted_cli_run)
