"""Data-parallel training on two CPU processes (gloo), launched the way ``torchrun`` does.

Each job is two fresh Python processes (a few seconds each on two cores); every test is one
or two jobs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchvat.core import perturbation
from torchvat.data.sampler import InfiniteBatchSampler
from torchvat.train import Trainer, load_checkpoint
from torchvat.train.distributed import (
    ShardedBatchSampler,
    init_distributed,
    is_distributed,
    launched_by_torchrun,
    rank,
    resolve_device,
    world_size,
    wrap_model,
)

from ._worker import deterministic_start, make_data, make_model

pytestmark = pytest.mark.distributed

TINY = {"eps": 0.5, "iterations": 6, "eval_every": 3, "log_every": 2, "batch_size": 4, "unlabeled_batch_size": 8}


def single_process(options: dict, *, world: int = 2, **model_options) -> Trainer:
    """The one-process run whose batches are the two processes' batches concatenated."""
    options = dict(options)
    options["batch_size"] *= world
    options["unlabeled_batch_size"] *= world
    trainer = Trainer(make_model(**model_options), **make_data(), progress=False, **options)
    trainer.fit()
    return trainer


@pytest.fixture
def fixed_start(monkeypatch):
    """VAT's random start from the rows only: the same for any split of the batch."""
    monkeypatch.setattr(perturbation, "_random_unit", deterministic_start)


@pytest.mark.parametrize(
    "method",
    [
        {"method": "vat", "n_power": 2, "probe": "finite_difference"},
        {"method": "at+vat", "n_power": 1, "probe": "exact", "regularize": "all"},
    ],
    ids=["vat-separate-fd", "at+vat-joint-exact"],
)
def test_two_processes_equal_one_process_on_the_concatenated_batch(run_job, tmp_path, fixed_start, method):
    options = {**TINY, **method}
    ranks = run_job("equivalence", tmp_path, {**options, "deterministic_start": True})
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert all(r["initialized_process_group"] for r in ranks)  # the trainer did it (torchrun env)
    # ... in setup(), not in its constructor: building a trainer starts no process group
    assert not any(r["initialized_at_construction"] or r["ddp_at_construction"] for r in ranks)
    # one gradient all-reduce per iteration (one bucket): the probe passes trigger none
    assert [r["allreduce_calls"] for r in ranks] == [options["iterations"]] * 2
    reference = single_process(options)
    for name, value in reference.model.named_parameters():
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name
        torch.testing.assert_close(ranks[0]["params"][name], value.detach(), rtol=1e-5, atol=1e-6)
    # logged training means are over both processes' batches; evaluation is over all test rows
    for r in ranks:
        assert r["logs"] == ranks[0]["logs"]
        for got, want in zip(r["history"], reference.history, strict=True):
            assert got.keys() == want.keys()
            for key in want:
                # unlabeled_classes is a nonlinear function of each process's own batch (exp of the
                # entropy of its mean prediction): the mean over processes is close to, not equal to,
                # its value on the concatenated batch
                rel = 1e-2 if key == "train_unlabeled_classes" else 1e-5
                assert got[key] == pytest.approx(want[key], rel=rel, abs=1e-6), key


def test_batchnorm_dropout_run_writes_on_rank_zero_and_resumes_in_one_process(run_job, tmp_path):
    out = tmp_path / "run"
    options = {**TINY, "method": "vat", "out_dir": str(out), "model": {"batch_norm": True, "dropout": 0.2}}
    ranks = run_job("batchnorm", tmp_path, options)
    # identical parameters and (after the final broadcast) identical BatchNorm statistics
    for name in ranks[0]["params"]:
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name
    for name in ranks[0]["buffers"]:
        assert torch.equal(ranks[0]["buffers"][name], ranks[1]["buffers"][name]), name
    # one update per iteration: the labeled pass, which the cross entropy is fitted under (the separate
    # unlabeled pass normalizes with its own batch but leaves the running statistics); the probe and
    # perturbed passes add none
    assert int(ranks[0]["buffers"]["1.num_batches_tracked"]) == TINY["iterations"]
    # only rank 0 wrote files; the metrics file has each line once
    assert set(ranks[0]["paths"]) >= {"metrics", "last"} and ranks[1]["paths"] == {}
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if line["kind"] == "train"] == [2, 4, 6]
    state = load_checkpoint(out / "last.pt")
    assert state["world_size"] == 2 and state["step"] == 6
    # the global stream moved 2 x 4 labeled rows per iteration: 48 rows = two epochs of 24
    assert (state["samplers"]["labeled"]["epoch"], state["samplers"]["labeled"]["position"]) == (1, 24)

    # resume in one process with the same per-process batch sizes
    model = make_model(batch_norm=True, dropout=0.2)
    trainer = Trainer(model, **make_data(), progress=False, **{**TINY, "method": "vat", "iterations": 8})
    trainer.load_state_dict(state)
    for name, value in model.named_parameters():
        assert torch.equal(value, ranks[0]["params"][name])
    assert trainer.labeled_sampler.state_dict()["batch_size"] == TINY["batch_size"]
    result = trainer.fit()
    assert result.steps == 8 and [r["step"] for r in result.history] == [3, 6, 8]
    assert (trainer.labeled_sampler.epoch, trainer.labeled_sampler.position) == (2, 8)
    assert not torch.equal(model[0].weight, ranks[0]["params"]["0.weight"])


def test_labeled_rows_normalized_with_the_unlabeled_statistics_under_ddp(run_job, tmp_path):
    # labeled_stats="unlabeled": two passes with a graph before each backward (the unlabeled pass's
    # statistics carry the cross entropy's gradient); DDP still averages one gradient per iteration
    options = {**TINY, "method": "vat", "labeled_stats": "unlabeled", "model": {"batch_norm": True, "dropout": 0.2}}
    ranks = run_job("labeled-stats", tmp_path, options)
    for name in ranks[0]["params"]:
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name
    # one update of the running statistics per iteration: the unlabeled pass's
    assert int(ranks[0]["buffers"]["1.num_batches_tracked"]) == TINY["iterations"]
    assert ranks[0]["allreduce_calls"] > 0


def test_one_process_checkpoint_resumes_in_two(run_job, tmp_path):
    out = tmp_path / "one"
    options = {**TINY, "method": "vat", "iterations": 4, "out_dir": str(out)}
    first = Trainer(make_model(), **make_data(), progress=False, **options)
    first.fit()
    saved = load_checkpoint(out / "last.pt")
    assert saved["world_size"] == 1 and saved["samplers"]["labeled"]["position"] == 16

    ranks = run_job("resume", tmp_path, {**options, "iterations": 8, "resume": str(out / "last.pt")})
    for r in ranks:
        assert r["steps"] == 8
        assert [h["step"] for h in r["history"]] == [3, 4, 6, 8]  # the one-process records come along
        # 16 rows read by one process, then 4 iterations of 2 x 4 rows: 48 = two epochs of 24
        assert (r["labeled_state"]["epoch"], r["labeled_state"]["position"]) == (1, 24)
        assert r["labeled_state"]["batch_size"] == 2 * TINY["batch_size"]
    for name, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][name])
        assert not torch.equal(value, saved["model"][name])
    assert "sync_batchnorm=True needs CUDA devices" in ranks[0]["sync_bn_error"]


def test_a_nonfinite_iteration_read_at_a_checkpoint_stops_every_process(run_job, tmp_path):
    """Only rank 0 writes checkpoints, but every process reads its non-finite record there and stops alike."""
    options = {**TINY, "method": "supervised", "nan_at": 2, "iterations": 10, "log_every": 50, "eval_every": 50}
    ranks = run_job("nan-at-checkpoint", tmp_path, {**options, "checkpoint_every": 3, "out_dir": str(tmp_path / "run")})
    assert [r["nonfinite"] for r in ranks] == [{"iteration": 2, "step": 1}] * 2
    assert torch.equal(ranks[0]["params"]["0.weight"], ranks[1]["params"]["0.weight"])


def test_helpers_outside_a_job(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not launched_by_torchrun() and not init_distributed("cpu")
    assert (rank(), world_size(), is_distributed()) == (0, 1, False)
    assert resolve_device(torch.device("cuda")) == torch.device("cuda")
    with pytest.raises(RuntimeError, match="needs an initialized process group of more than one process"):
        wrap_model(make_model(), torch.device("cpu"))
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launched_by_torchrun()
    assert resolve_device(torch.device("cuda")) == torch.device("cuda", 1)  # LOCAL_RANK picks the GPU
    assert resolve_device(torch.device("cuda", 0)) == torch.device("cuda", 0)  # an explicit index wins
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_sharded_sampler_slices_the_global_stream():
    shards = [ShardedBatchSampler(12, 3, rank=r, world_size=2, seed=5) for r in (0, 1)]
    whole = InfiniteBatchSampler(12, 6, seed=5)
    seen = []
    for _ in range(4):  # two epochs of 12
        parts = [next(s) for s in shards]
        assert not set(parts[0].tolist()) & set(parts[1].tolist())  # disjoint within a global batch
        assert torch.equal(torch.cat(parts), next(whole))
        seen += torch.cat(parts).tolist()
    assert sorted(seen[:12]) == sorted(seen[12:]) == list(range(12))  # each row once per epoch
    states = [s.state_dict() for s in shards]  # the shared stream's state, the same on every process
    assert torch.equal(states[0].pop("generator_state"), states[1].pop("generator_state"))
    assert states[0] == states[1] == {"n": 12, "batch_size": 6, "seed": 5, "epoch": 1, "position": 12}
    assert shards[0].batch_size == 6 and shards[0].per_process == 3
    with pytest.raises(ValueError, match=r"rank must be an integer in \[0, 2\), got 2"):
        ShardedBatchSampler(12, 3, rank=2, world_size=2)


def test_torchrun_cli_two_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "cli"
    cmd = [
        str(torchrun),
        "--nproc_per_node=2",
        "-m",
        "torchvat",
        "train",
        "--dataset",
        "moons",
        "--iters",
        "20",
        "--eval-every",
        "10",
        "--log-every",
        "5",
        "--batch-size",
        "8",
        "--unlabeled-batch-size",
        "32",
        "--no-progress",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("torchvat train: vat on cpu") == 1  # rank 0 prints, rank 1 is quiet
    for name in ("config.toml", "run.json", "metrics.jsonl", "last.pt", "report.md", "curves.png"):
        assert (out / name).is_file(), name
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if line["kind"] == "train"] == [5, 10, 15, 20]
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 20 and state["world_size"] == 2
    assert not list(tmp_path.glob("runs"))  # no second run folder from rank 1


def test_the_average_of_the_weights_is_rank_0s_on_every_process(run_job, tmp_path, fixed_start):
    # rank 1 starts from another initialization: DDP broadcasts rank 0's weights, and setup() rank 0's average
    options = {**TINY, "method": "vat", "probe": "finite_difference", "ema": 0.8}
    ranks = run_job("ema", tmp_path, {**options, "deterministic_start": True, "seed_per_rank": True})
    assert ranks[0]["ema"] is not None and ranks[0]["ema"].keys() == ranks[1]["ema"].keys()
    for name, value in ranks[0]["ema"].items():
        assert torch.equal(value, ranks[1]["ema"][name]), name
    reference = single_process(options)  # the one-process run on the concatenated batches, rank 0's start
    assert reference.ema is not None
    for name, value in reference.ema.module.state_dict().items():
        torch.testing.assert_close(ranks[0]["ema"][name], value, rtol=1e-5, atol=1e-6)
