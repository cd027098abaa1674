"""``--bn-recalibrate``: the flags, and a run whose saved best weights evaluate as in training (issue 18)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from torchvat.cli import main
from torchvat.cli.main import build_parser
from torchvat.cli.train import _train_overrides
from torchvat.runs import load_run


def test_the_flags_parse_into_the_train_config_fields(capsys):
    flags = ["--bn-recalibrate", "labeled", "--bn-recalibrate-batches", "none", "--bn-recalibrate-batch-size", "50"]
    overrides = _train_overrides(build_parser().parse_args(["train", "--dataset", "moons", *flags]))
    assert {k: v for k, v in overrides.items() if k.startswith("bn_")} == {
        "bn_recalibrate": "labeled",
        "bn_recalibrate_batches": None,
        "bn_recalibrate_batch_size": 50,
    }
    args = build_parser().parse_args(["train", "--dataset", "moons", "--bn-recalibrate", "none"])
    assert _train_overrides(args)["bn_recalibrate"] is None
    assert main(["train", "--dataset", "moons", "--bn-recalibrate", "test"]) == 2
    assert "invalid choice: 'test'" in capsys.readouterr().err


def test_the_best_checkpoint_evaluates_with_the_statistics_of_its_evaluation(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--dataset", "moons", "--data-option", "n_samples=200", "--labels", "8", "--method", "vat"]
    args += ["--model", "mlp", "--model-option", "hidden_sizes=[16]", "--eps", "0.3", "--out", str(out)]
    args += ["--iters", "20", "--eval-every", "10", "--batch-size", "8", "--unlabeled-batch-size", "32"]
    args += ["--bn-recalibrate", "unlabeled", "--bn-recalibrate-batches", "4", "--bn-recalibrate-batch-size", "16"]
    assert main([*args, "--no-progress"]) == 0
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["bn_recalibrated"] is not None
    means = [k for k in best["bn_recalibrated"] if k.endswith("running_mean")]
    assert means and not any(torch.equal(best["bn_recalibrated"][k], best["model"][k]) for k in means)
    model, data, _ = load_run(out)
    record = [
        r
        for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if r.get("kind") == "eval" and r["step"] == best["step"]
    ]
    with torch.no_grad():
        loss = F.cross_entropy(model(data.x_test), data.y_test)
    assert float(loss) == pytest.approx(record[-1]["test_loss"], rel=1e-5)


def test_kl_direction_is_a_choice_flag(capsys):
    args = build_parser().parse_args(["train", "--dataset", "moons", "--kl-direction", "perturbed-clean"])
    assert _train_overrides(args)["kl_direction"] == "perturbed-clean"
    assert main(["train", "--dataset", "moons", "--kl-direction", "reverse"]) == 2
    assert "invalid choice: 'reverse'" in capsys.readouterr().err
