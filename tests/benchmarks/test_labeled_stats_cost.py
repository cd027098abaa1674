"""``benchmarks/labeled_stats_cost.py`` times real engine steps of both layouts."""

import sys

import pytest
import torch

from torchvat.models import build_model
from torchvat.train import Batch

from ._bench import load

load("_timing")  # the scripts import it as a sibling module
cost = load("labeled_stats_cost")


@pytest.mark.parametrize("labeled_stats", cost.LAYOUTS)
def test_a_step_trains_the_network(labeled_stats):
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(20,), n_classes=10).train()
    before = [p.detach().clone() for p in model.parameters()]
    batch = Batch(torch.randn(16, 20), torch.randint(0, 10, (16,)), torch.randn(32, 20))
    cost.make_step(model, labeled_stats, batch)()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_main_prints_one_row_per_features(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["labeled_stats_cost.py", "--features", "20", "--steps", "1", "--repeats", "1"])
    cost.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 20 |")]
    assert len(rows) == 1 and float(rows[0].rstrip(" |").split(" | ")[-1]) > 0
