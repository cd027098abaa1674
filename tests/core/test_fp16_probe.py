"""The VAT probe under float16 autocast: its gradients must not underflow (TorchSSL issue #28)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchvat.core.perturbation as perturbation
from torchvat.core import virtual_adversarial_perturbation


def _confident_mlp() -> nn.Module:
    """An MLP whose predictions are confident (mean top probability 0.97): the probe's gradients are tiny."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    with torch.no_grad():
        model[4].weight.mul_(300.0)
    return model


def _direction(model: nn.Module, x: torch.Tensor, probe: str, fp16: bool) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    with torch.autocast("cpu", dtype=torch.float16, enabled=fp16):
        r = virtual_adversarial_perturbation(model, x, eps=1.0, n_power=1, probe=probe, generator=generator)
    return r.float().flatten(1)


# "auto" is the exact product under float16 (resolve_probe); the finite difference is limited by float16's
# resolution of the logits as well (not by underflow), so its floor is on the mean over the samples
@pytest.mark.parametrize(("probe", "floor"), [("auto", "min"), ("finite_difference", "mean")])
def test_the_fp16_direction_is_the_float32_one_where_the_unscaled_probe_underflows(probe, floor, monkeypatch):
    model = _confident_mlp()
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert float(model(x).softmax(1).amax(1).mean()) > 0.95
    reference = _direction(model, x, "exact", fp16=False)  # float32, exact Hessian-vector product

    cosine = torch.nn.functional.cosine_similarity(_direction(model, x, probe, fp16=True), reference).abs()
    assert float(getattr(cosine, floor)()) > 0.9

    # the same probe without the float32 output gradient scaled per sample: its gradients flush to
    # zero in float16 and some samples keep (nearly) their random start
    monkeypatch.setattr(perturbation, "_float16_range", lambda t: False)
    naive = torch.nn.functional.cosine_similarity(_direction(model, x, probe, fp16=True), reference).abs()
    assert float(naive.min()) < 0.1 and float(naive.mean()) < 0.8


def test_rows_are_scaled_to_a_largest_magnitude_of_one_and_zero_rows_stay_zero():
    g = torch.tensor([[1e-7, -4e-7], [0.0, 0.0], [3.0, 1.5]])  # 1e-7: below float16's normal range
    scaled = perturbation._unit_rows(g)
    assert scaled.dtype == torch.float32
    assert torch.allclose(scaled[0], torch.tensor([0.25, -1.0]))
    assert scaled.half()[0].tolist() == [0.25, -1.0]  # now representable in float16
    assert torch.equal(scaled[1], torch.zeros(2)) and torch.equal(scaled[2], torch.tensor([1.0, 0.5]))
