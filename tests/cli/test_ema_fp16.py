"""``torchvat train --ema`` / ``--amp fp16`` and ``torchvat evaluate --weights ema|raw``."""

from __future__ import annotations

import json

import pytest
import torch

from torchvat.cli import main
from torchvat.cli.evaluate import run_evaluate
from torchvat.runs import UsageError, load_run
from torchvat.train import load_checkpoint, save_checkpoint

ARGS = [
    "train",
    "--dataset",
    "moons",
    "--labels",
    "8",
    "--data-option",
    "n_samples=200",
    "--eps",
    "0.3",
    "--iters",
    "20",
    "--eval-every",
    "10",
    "--lr",
    "0.01",
    "--batch-size",
    "8",
    "--no-progress",
    "--threads",
    "1",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ema")
    assert main([*ARGS, "--ema", "0.9", "--out", str(base / "ema")]) == 0
    assert main([*ARGS, "--out", str(base / "plain")]) == 0
    return base


def test_train_ema_saves_both_weights_and_evaluate_uses_the_average_by_default(runs, capsys):
    state = load_checkpoint(runs / "ema" / "last.pt")
    assert state["config"]["ema"] == 0.9 and state["ema"]["decay"] == 0.9 and int(state["ema"]["updates"]) == 20
    model, _, info = load_run(runs / "ema")
    assert info["weights"] == "ema"
    assert all(torch.equal(v, state["ema"]["model"][k]) for k, v in model.state_dict().items())
    raw, _, info = load_run(runs / "ema", weights="raw")
    assert info["weights"] == "raw"
    assert all(torch.equal(v, state["model"][k]) for k, v in raw.state_dict().items())

    assert "those of the EMA of the weights (decay 0.9)" in (runs / "ema" / "report.md").read_text()
    assert "EMA of the weights" not in (runs / "plain" / "report.md").read_text()
    assert main(["evaluate", str(runs / "ema"), "--eps", "0,0.3", "--max-examples", "50", "--pgd-steps", "2"]) == 0
    assert "ema weights" in capsys.readouterr().out
    res = run_evaluate(runs / "ema", eps=[0.0], max_examples=50, pgd_steps=2, weights="raw", quiet=True)
    assert "raw weights" in res.paths["report"].read_text()


def test_evaluate_refuses_ema_weights_of_a_run_without_them(runs, capsys):
    with pytest.raises(UsageError, match=r"has no EMA weights: its run was trained without --ema.*--weights raw"):
        load_run(runs / "plain", weights="ema")
    assert main(["evaluate", str(runs / "plain"), "--weights", "ema", "--eps", "0", "--max-examples", "20"]) != 0
    assert "has no EMA weights" in capsys.readouterr().err
    with pytest.raises(ValueError, match="weights must be one of 'ema', 'raw', got 'best'"):
        load_run(runs / "plain", weights="best")


def test_a_run_folder_written_before_the_average_still_loads(runs, tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    for name in ("run.json", "config.toml"):
        (folder / name).write_bytes((runs / "plain" / name).read_bytes())
    state = load_checkpoint(runs / "plain" / "last.pt")
    del state["ema"]  # the layout written before the average existed
    del state["config"]["ema"]
    save_checkpoint(state, folder / "last.pt")
    model, _, info = load_run(folder)
    assert info["weights"] == "raw"
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())


def test_train_amp_fp16_from_the_command_line(tmp_path):
    out = tmp_path / "fp16"
    assert main([*ARGS, "--amp", "fp16", "--log-every", "5", "--out", str(out)]) == 0
    state = load_checkpoint(out / "last.pt")
    assert state["config"]["amp"] == "fp16" and state["scaler"]["scale"] > 0
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("scaler_skipped" in r and "loss_scale" in r for r in logged)
    assert "fp16" in (out / "config.toml").read_text()
