"""Faults of a distributed ``torchvat train`` run: a killed worker, elastic restarts, a stopped peer, two nodes.

Every job trains ``digits`` with VAT (dropout in the model) on two gloo processes, for a hundred
iterations. One uninterrupted run (module-scoped) is the reference that the resumed runs must equal
bitwise; it runs on two "nodes" of one process each (two ``torchrun`` agents meeting through a c10d
rendezvous on localhost), so the resumed one-node, two-process runs equal to it also show that two
nodes train the job one node trains. Worker processes are found through ``/proc`` (their parent and
``RANK``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torchvat.cli.main import main as cli_main
from torchvat.train import TrainConfig, Trainer, load_checkpoint
from torchvat.train.distributed import rank_seed
from torchvat.train.state import process_state

from ..reliability._helpers import assert_same_state
from ._worker import make_data, make_model
from .conftest import free_port

pytestmark = pytest.mark.distributed

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
ITERS = 100
ARGS = [
    "train",
    "--dataset",
    "digits",
    "--iters",
    str(ITERS),
    "--checkpoint-every",
    "20",
    "--eval-every",
    "50",
    "--log-every",
    "10",
    "--batch-size",
    "8",
    "--unlabeled-batch-size",
    "32",
    "--model-option",
    "dropout=0.2",
    "--no-progress",
    "--threads",
    "1",
    "--seed",
    "3",
]
TIMEOUT = 240  # seconds for one job; the machine may be loaded


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.pop("TORCHVAT_TEST_CHECKPOINT_PAUSE", None)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", MPLBACKEND="Agg", **extra)
    return env


def _torchrun(launcher: list[str], args: list[str], cwd: Path) -> subprocess.Popen:
    cmd = [TORCHRUN, *launcher, "-m", "torchvat", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> str:
    try:
        return proc.communicate(timeout=TIMEOUT)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _workers(parent: int) -> dict[tuple[int, int], int]:
    """The live worker processes of a ``torchrun``: pid by (restart count, rank)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            env = dict(item.split("=", 1) for item in (entry / "environ").read_text().split("\0") if "=" in item)
        except (OSError, ValueError, IndexError):  # the process ended meanwhile
            continue
        if "RANK" in env:
            found[(int(env.get("TORCHELASTIC_RESTART_COUNT", 0)), int(env["RANK"]))] = int(entry.name)
    return found


def _kill_rank_one_after_a_checkpoint(proc: subprocess.Popen, run: Path) -> int:
    """SIGKILL rank 1 of the first attempt once ``run/last.pt`` exists; return the checkpoint's step."""
    deadline = time.monotonic() + TIMEOUT
    while not (run / "last.pt").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no checkpoint appeared (rc {proc.poll()}): {_finish(proc)[-3000:]}")
        time.sleep(0.02)
    pid = _workers(proc.pid).get((0, 1))
    if pid is None:
        pytest.fail(f"rank 1 not found among the workers of torchrun: {_finish(proc)[-3000:]}")
    os.kill(pid, signal.SIGKILL)
    step = int(load_checkpoint(run / "last.pt")["step"])
    assert 20 <= step < ITERS, "the run ended before the kill; make it longer"
    return step


def _assert_equal_runs(run: Path, reference: Path) -> None:
    got, want = load_checkpoint(run / "last.pt"), load_checkpoint(reference / "last.pt")
    assert got["step"] == want["step"] == ITERS
    for key in ("model", "optimizer", "schedule", "samplers", "ranks"):
        assert_same_state(got[key], want[key])
    assert got["history"] == want["history"]
    assert (run / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
    assert_same_state(load_checkpoint(run / "best.pt")["model"], load_checkpoint(reference / "best.pt")["model"])


class TwoNodes:
    """The uninterrupted run on two nodes: its folder and each node's output."""

    def __init__(self, base: Path, outputs: list[str], codes: list[int | None]) -> None:
        self.base, self.run, self.outputs, self.codes = base, base / "run", outputs, codes


def _two_nodes(base: Path) -> TwoNodes:
    for _attempt in range(3):  # another program may take the free port first
        launcher = [
            "--nnodes=2",
            "--nproc_per_node=1",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint=127.0.0.1:{free_port()}",
            "--rdzv_id=faults-test",
        ]
        nodes = [_torchrun(launcher, [*ARGS, "--out", "run"], base) for _ in range(2)]
        outputs = [_finish(node) for node in nodes]
        if not any("address already in use" in out.lower() for out in outputs):
            break
    return TwoNodes(base, outputs, [node.returncode for node in nodes])


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory) -> TwoNodes:
    """The uninterrupted run, on two nodes of one process each."""
    return _two_nodes(tmp_path_factory.mktemp("reference"))


@pytest.fixture
def reference(two_nodes) -> Path:
    assert two_nodes.codes == [0, 0], two_nodes.outputs[0][-3000:] + two_nodes.outputs[1][-3000:]
    return two_nodes.run


def test_a_checkpoint_holds_every_process_state(reference):
    state = load_checkpoint(reference / "last.pt")
    assert state["world_size"] == 2 and [part["rank"] for part in state["ranks"]] == [0, 1]
    own = state["ranks"]
    # each process has its own streams (dropout masks, VAT's random starts)
    assert not torch.equal(own[0]["generator"], own[1]["generator"])
    assert not torch.equal(own[0]["rng"]["torch"], own[1]["rng"]["torch"])
    assert torch.equal(own[0]["generator"], state["generator"])  # the top level is rank 0's, as before


def test_a_killed_worker_rerun_with_resume_ends_bitwise_equal(tmp_path, reference):
    proc = _torchrun(["--standalone", "--nproc_per_node=2"], [*ARGS, "--out", "run"], tmp_path)
    step = _kill_rank_one_after_a_checkpoint(proc, tmp_path / "run")
    _finish(proc)
    assert proc.returncode != 0  # torchrun stops the job
    again = _torchrun(["--standalone", "--nproc_per_node=2"], [*ARGS, "--resume", "--out", "run"], tmp_path)
    out = _finish(again)
    assert again.returncode == 0, out[-3000:]
    assert "resumed at iteration" in out and step >= 20
    assert "reseed" not in out  # every process continues its own saved streams
    _assert_equal_runs(tmp_path / "run", reference)


def test_elastic_restart_after_a_killed_worker_ends_bitwise_equal(tmp_path, reference):
    launcher = ["--standalone", "--nproc_per_node=2", "--max-restarts=1", "--monitor-interval=0.1"]
    proc = _torchrun(launcher, [*ARGS, "--resume", "--out", "run"], tmp_path)
    step = _kill_rank_one_after_a_checkpoint(proc, tmp_path / "run")
    out = _finish(proc)
    assert proc.returncode == 0, out[-3000:]
    # the first start: no checkpoint yet; the restart: from the last checkpoint
    assert "no checkpoint in run yet: the run starts from the beginning (--resume)" in out
    assert "resumed at iteration" in out and step >= 20
    _assert_equal_runs(tmp_path / "run", reference)


def test_resume_with_another_world_size_runs_and_says_what_is_exact(tmp_path, reference, caplog):
    """A two-process checkpoint resumed by one process: its weights and data stream go on, with a notice."""
    caplog.set_level(logging.WARNING, logger="torchvat")
    code = cli_main([*ARGS, "--resume", str(reference / "last.prev.pt"), "--out", str(tmp_path / "b")])
    assert code == 0
    assert "written by 2 process(es) and is resumed by 1" in caplog.text
    resumed = load_checkpoint(tmp_path / "b" / "last.pt")
    assert resumed["step"] == ITERS and resumed["world_size"] == 1 and len(resumed["ranks"]) == 1
    assert resumed["history"][: len(resumed["history"]) - 1] == load_checkpoint(reference / "last.prev.pt")["history"]


# ----------------------------------------------------------------- loading, in one process
TINY = {"eps": 0.5, "iterations": 4, "eval_every": 2, "log_every": 2, "progress": False}


def _as_rank(monkeypatch, rank: int) -> None:
    """Build trainers for rank ``rank`` of two processes (the constructor starts no process group)."""
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")


def _two_process_state() -> dict:
    """A state as two processes of 4 + 8 rows per batch save it: rank 1's part with streams of its own."""
    one = Trainer(make_model(), **make_data(), batch_size=8, unlabeled_batch_size=16, **TINY)
    one.fit()
    state = one.state_dict()
    state["world_size"] = 2
    state["config"] = {**state["config"], "batch_size": 4, "unlabeled_batch_size": 8}
    other = Trainer(make_model(), **make_data(), batch_size=8, unlabeled_batch_size=16, **{**TINY, "seed": 9})
    other.setup()
    torch.rand(3)
    state["ranks"] = [state["ranks"][0], {**process_state(other), "rank": 1}]
    return state


def test_each_process_restores_its_own_state(monkeypatch):
    state = _two_process_state()
    _as_rank(monkeypatch, 1)
    trainer = Trainer(make_model(), **make_data(), batch_size=4, unlabeled_batch_size=8, **{**TINY, "iterations": 8})
    trainer.load_state_dict(state)
    part = state["ranks"][1]
    assert torch.equal(trainer.generator.get_state(), part["generator"])
    assert torch.equal(torch.get_rng_state(), part["rng"]["torch"])
    assert trainer.step == state["step"]


def test_a_checkpoint_without_every_process_state_reseeds_with_a_notice(monkeypatch, caplog):
    """A checkpoint written before ``"ranks"`` (the key deleted here) loads with the reseeding of before."""
    state = _two_process_state()
    del state["ranks"]
    _as_rank(monkeypatch, 1)
    trainer = Trainer(make_model(), **make_data(), batch_size=4, unlabeled_batch_size=8, **{**TINY, "iterations": 8})
    trainer.load_state_dict(state)
    want = torch.Generator().manual_seed(rank_seed(0, 1, 2, state["step"])).get_state()
    assert torch.equal(trainer.generator.get_state(), want)  # (seed, rank, step), as before
    _as_rank(monkeypatch, 0)
    caplog.set_level(logging.WARNING, logger="torchvat")
    first = Trainer(make_model(), **make_data(), batch_size=4, unlabeled_batch_size=8, **{**TINY, "iterations": 8})
    first.load_state_dict(state)
    assert torch.equal(first.generator.get_state(), state["generator"])  # rank 0 continues its own
    assert "holds rank 0's random state only (written before every process's state was saved)" in caplog.text


def test_a_malformed_ranks_entry_is_refused(monkeypatch):
    state = _two_process_state()
    state["ranks"] = state["ranks"][:1]
    _as_rank(monkeypatch, 1)
    trainer = Trainer(make_model(), **make_data(), batch_size=4, unlabeled_batch_size=8, **TINY)
    with pytest.raises(ValueError, match=r"'ranks' must hold one state per process \(2\), got 1"):
        trainer.load_state_dict(state)
    assert trainer.step == 0


def test_dist_timeout_is_checked_by_the_config_and_the_command_line(tmp_path, capsys):
    assert TrainConfig().dist_timeout == 1800.0  # room for rank 0's checkpoint on a slow file system
    with pytest.raises(ValueError, match=r"dist_timeout must be a finite number > 0, got 0"):
        TrainConfig(dist_timeout=0)
    assert cli_main(["train", "--dist-timeout", "-5", "--iters", "1", "--out", str(tmp_path / "r")]) == 2
    assert "dist_timeout must be a finite number > 0, got -5.0" in capsys.readouterr().err


# ----------------------------------------------------------------- a stopped peer, no torchrun agent
def _start_without_agent(args: list[str], cwd: Path, port: int) -> list[subprocess.Popen]:
    """The two processes as ``srun`` starts them: the environment only, rank 0 hosts the store."""
    procs = []
    for rank in range(2):
        env = _env(RANK=str(rank), LOCAL_RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "torchvat", *args],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return procs


def test_a_stopped_peer_is_named_and_the_survivor_exits(tmp_path):
    args = [*ARGS, "--iters", "5000", "--dist-timeout", "3", "--out", "run"]
    for _attempt in range(3):  # another program may take the free port first
        procs = _start_without_agent(args, tmp_path, free_port())
        try:
            deadline = time.monotonic() + TIMEOUT
            while not (tmp_path / "run" / "last.pt").exists() and procs[0].poll() is None:
                assert time.monotonic() < deadline, "no checkpoint appeared"
                time.sleep(0.02)
            if procs[0].poll() is not None:
                out = procs[0].communicate()[0]
                if "address already in use" in out.lower():
                    continue
                pytest.fail(f"rank 0 ended (rc {procs[0].returncode}) before its first checkpoint: {out[-3000:]}")
            procs[1].send_signal(signal.SIGSTOP)
            out = procs[0].communicate(timeout=TIMEOUT)[0]
        finally:
            procs[1].send_signal(signal.SIGCONT)
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.communicate()
        break
    assert procs[0].returncode == 1, out[-3000:]
    assert "rank 0 waited more than 3 s (dist_timeout, --dist-timeout) for the other processes" in out
    assert "rank 1 stopped answering" in out
    assert "restart every process with --resume" in out
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] >= 20  # the last checkpoint is intact


# ----------------------------------------------------------------- two nodes on one machine
def test_two_nodes_with_c10d_rendezvous_write_one_run_folder(two_nodes):
    """``torchrun --nnodes=2 --rdzv_backend=c10d`` twice on one machine: one job, one run folder."""
    assert two_nodes.codes == [0, 0], two_nodes.outputs[0][-3000:] + two_nodes.outputs[1][-3000:]
    assert sorted(p.name for p in two_nodes.base.iterdir()) == ["run"]  # no second folder from rank 1
    for name in ("config.toml", "run.json", "metrics.jsonl", "last.pt", "best.pt", "report.md"):
        assert (two_nodes.run / name).is_file(), name
    assert sum(out.count("torchvat train: vat on cpu") for out in two_nodes.outputs) == 1  # rank 0 prints
    assert load_checkpoint(two_nodes.run / "last.pt")["world_size"] == 2
