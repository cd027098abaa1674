"""Helpers of the reliability tests: tiny two-moons data, small MLPs, CLI runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from sklearn.datasets import make_moons
from torch import nn

from torchvat.train import load_checkpoint


class Moons:
    """Two moons: 8 labeled rows, 400 unlabeled, 200 test rows."""

    def __init__(self, seed: int = 0) -> None:
        x, y = make_moons(600, noise=0.1, random_state=seed)
        x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)
        self.x_unlabeled = x[:400]
        idx = torch.cat([torch.nonzero(y[:400] == c)[:4, 0] for c in (0, 1)])
        self.x_labeled, self.y_labeled = x[idx], y[idx]
        self.x_test, self.y_test = x[400:], y[400:]
        self.x_val = self.y_val = None


def make_mlp(seed: int = 0, *, batch_norm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(2, 16)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(16))
    layers += [nn.ReLU(), nn.Linear(16, 2)]
    return nn.Sequential(*layers)


def small(**overrides):
    options = dict(
        eps=0.3, iterations=12, eval_every=4, log_every=2, batch_size=8, unlabeled_batch_size=16, progress=False
    )
    options.update(overrides)
    return options


def assert_same_state(a: dict, b: dict) -> None:
    """Two state dicts (or nested containers of tensors) are bitwise equal."""
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            assert_same_state(u, v)
    else:
        assert a == b


# ----------------------------------------------------------------------------- CLI runs
CLI_TIMEOUT = 300  # seconds; the machine may be heavily loaded
TRAIN_ARGS = [
    "train",
    "--dataset",
    "moons",
    "--iters",
    "200",
    "--checkpoint-every",
    "5",
    "--eval-every",
    "20",
    "--log-every",
    "5",
    "--batch-size",
    "8",
    "--unlabeled-batch-size",
    "16",
    "--no-progress",
    "--threads",
    "1",
    "--seed",
    "3",
]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TORCHVAT_TEST_CHECKPOINT_PAUSE", None)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", **extra)
    return env


def start_cli(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "torchvat", *args],
        cwd=cwd,
        env=cli_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torchvat", *args],
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


def metrics_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def final_state(run: Path) -> dict:
    return load_checkpoint(run / "last.pt")
