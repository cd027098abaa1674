"""``benchmarks/trimmed_bn_cost.py`` times real training steps of both networks."""

import sys

import pytest
import torch

from torchvat.models import build_model

from ._bench import load

load("_timing")  # the scripts import it as a sibling module
cost = load("trimmed_bn_cost")


@pytest.mark.parametrize("kind", ["supervised", "vat"])
def test_a_step_trains_the_network(kind):
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(8,), n_classes=10, bn_trim=5.0).train()
    before = [p.detach().clone() for p in model.parameters()]
    step = cost.make_step(model, kind, torch.randn(16, 8), torch.randint(0, 10, (16,)), torch.randn(32, 8))
    step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_main_prints_one_row_per_features_and_step(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["trimmed_bn_cost.py", "--features", "8", "--steps", "1", "--repeats", "1"])
    cost.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 8 |")]
    assert [row.split(" | ")[1] for row in rows] == ["supervised", "vat"]
    assert all(float(row.rstrip(" |").split(" | ")[-1]) > 0 for row in rows)
