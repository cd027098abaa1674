"""``VATModule`` under Lightning's ``"ddp"`` strategy: two real CPU processes on the gloo backend.

The test starts ``_lightning_ddp_worker.py`` once (rank 0); Lightning re-runs it for rank 1. One job
(about 20 s on two loaded cores, mostly starting two processes that import ``lightning``), then a one-process
replay of the two ranks' batches as the reference.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchvat.core import perturbation

from ._lightning_ddp_worker import HPARAMS, deterministic_start, make_model, recording_module

pytestmark = pytest.mark.distributed

WORKER = Path(__file__).with_name("_lightning_ddp_worker.py")
SRC = Path(__file__).resolve().parents[2] / "src"
STEPS = 6
TERMS = ("train_ce", "train_vat", "train_loss", "train_acc")
# variables that would make Lightning think another launcher (torchrun, SLURM, ...) created the processes
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_worker(out: Path, steps: int, timeout: float = 120) -> list[dict]:
    """Run the two-process job; return each rank's saved result, rank order."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in LAUNCHER_VARIABLES and not k.startswith(("SLURM_", "TORCHELASTIC_", "PL_", "LSB_", "OMPI_"))
    }
    env.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        OMP_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p),
    )
    cmd = [sys.executable, str(WORKER), str(out), str(steps)]
    # its own session: on a timeout the rank-1 process (a child of rank 0) is killed with it
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        text = proc.communicate(timeout=timeout)[0]  # EOF once both ranks have exited (rank 1 shares the pipe)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        text = proc.communicate()[0]
        pytest.fail(f"the two-process Lightning job did not finish in {timeout} s:\n{text}")
    assert proc.returncode == 0, f"the job exited with {proc.returncode}:\n{text}"
    files = [out / f"rank{r}.pt" for r in range(2)]
    assert all(f.is_file() for f in files), f"missing {[f.name for f in files if not f.is_file()]}:\n{text}"
    return [torch.load(f, weights_only=False) for f in files]


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_two_process_ddp_run_matches_a_one_process_replay(tmp_path, monkeypatch):
    ranks = run_worker(tmp_path / "out", STEPS)
    r0, r1 = ranks
    assert [r["rank"] for r in ranks] == [0, 1]
    assert [(r["world_size"], r["distributed_world_size"], r["backend"]) for r in ranks] == [(2, 2, "gloo")] * 2
    assert [r["global_step"] for r in ranks] == [STEPS, STEPS]
    assert [r["ddp_wrapper"] for r in ranks] == ["DistributedDataParallel"] * 2
    # one gradient all-reduce per step (one bucket): the method's probe and perturbed passes, inside the
    # wrapper's forward on the plain model, trigger none
    assert [r["allreduce_calls"] for r in ranks] == [STEPS, STEPS]

    # each rank trained on its own shard: in every step the two ranks' labeled rows are disjoint
    for step, (b0, b1) in enumerate(zip(r0["batches"], r1["batches"], strict=True)):
        rows0, rows1 = {tuple(row.tolist()) for row in b0[0]}, {tuple(row.tolist()) for row in b1[0]}
        assert not rows0 & rows1, step
    assert len(r0["batches"]) == STEPS

    # parameters: identical on both ranks (the gradients were all-reduced), moved from the start
    names = r0["parameter_names"]
    for name in names:
        assert torch.equal(r0["state"][name], r1["state"][name]), name
        assert torch.equal(r0["initial"][name], r1["initial"][name]), name
        assert not torch.equal(r0["state"][name], r0["initial"][name]), name
    # BatchNorm's running statistics come from the labeled pass only (one per step: the engine's default
    # separate passes, whose unlabeled pass leaves them) on each rank; DDP leaves the last step's update
    # local, and VATModule.on_train_end gives every rank rank 0's buffers
    for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(r0["state"][name], r1["state"][name]), name
    for r in ranks:
        assert int(r["state"]["1.num_batches_tracked"]) == STEPS
        assert torch.isfinite(r["state"]["1.running_mean"]).all() and torch.isfinite(r["state"]["1.running_var"]).all()
        assert not torch.equal(r["state"]["1.running_mean"], r["initial"]["1.running_mean"])

    # logged terms: finite, the same on both ranks, and the mean of the two ranks' own last-step values
    for r in ranks:
        assert set(TERMS) <= set(r["metrics"])
        assert all(math.isfinite(r["metrics"][k]) for k in TERMS)
        assert [set(log) for log in r["local_logs"]] == [set(TERMS)] * STEPS
    assert {k: r0["metrics"][k] for k in TERMS} == {k: r1["metrics"][k] for k in TERMS}
    assert r0["local_logs"][-1]["train_ce"] != r1["local_logs"][-1]["train_ce"]  # different rows, so it averaged
    assert r0["metrics"]["train_vat"] > 0
    for k in TERMS:
        mean = (r0["local_logs"][-1][k] + r1["local_logs"][-1][k]) / 2
        assert r0["metrics"][k] == pytest.approx(mean, rel=1e-6), k

    # one process, the same start, each step's two batches: the mean of the two losses has the
    # gradient DDP applies (the mean of the ranks' gradients). The results agree to rounding only: DDP
    # averages the gradients in another order, which changes the parameters' last bits from step 2 on.
    monkeypatch.setattr(perturbation, "_random_unit", deterministic_start)
    model = make_model()
    for name, value in model.state_dict().items():
        assert torch.equal(value, r0["initial"][name]), name
    # eps: derived by each rank from its first batch with the trainer's rule, then one value for both, their mean
    from torchvat.train.defaults import derive_eps

    assert r0["eps"] == r1["eps"]
    local = [derive_eps(r["batches"][0][0], r["batches"][0][2]) for r in ranks]
    assert local[0] != local[1] and r0["eps"] == pytest.approx(sum(local) / 2, rel=1e-6)
    module = recording_module(model, **{**HPARAMS, "eps": r0["eps"]})
    module.train()
    optimizer = module.configure_optimizers()
    for step in range(STEPS):
        optimizer.zero_grad()
        losses = [module.training_step(r["batches"][step], step) for r in ranks]
        for rank, r in enumerate(ranks):
            got, want = r["local_logs"][step], module.local_logs[-2 + rank]
            for k in TERMS:
                assert got[k] == pytest.approx(want[k], rel=1e-4, abs=1e-7), (step, rank, k)
        (sum(losses) / 2).backward()
        optimizer.step()
    for name, value in model.named_parameters():
        torch.testing.assert_close(r0["state"][name], value.detach(), rtol=1e-5, atol=1e-6, msg=name)
