"""Regression tests for the silent collapse of VAT with BatchNorm networks.

Mechanism (found with torchvat's trainer on scikit-learn digits, BN MLP, 100 labels): when the
VAT target comes from a clean pass over labeled + unlabeled rows but the probe and perturbed
passes see only the unlabeled rows, BatchNorm normalizes the two with different batch
statistics. The divergence at r = 0 is then not 0, and minimizing it drove test error from 10%
(supervised) to 50-65% in eval and train mode alike. The trainer is immune by design: a search's
target always comes from a pass with the batch composition of its perturbed passes.
"""

import pytest
import torch
from torch import nn

from torchvat import vat_loss
from torchvat.core import TargetMismatchWarning
from torchvat.data import load_digits_data
from torchvat.models import MLP
from torchvat.train import Trainer

from .conftest import make_mlp


class _Recorder(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batch_sizes: list[int] = []

    def forward(self, x):
        self.batch_sizes.append(x.shape[0])
        return self.inner(x)


def test_mismatched_batch_composition_makes_lds_nonzero_at_r0():
    # the mechanism itself, shown with the core function
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).train()
    x_l, x_u = torch.randn(8, 4) + 1.0, torch.randn(32, 4)
    joint_target = model(torch.cat([x_l, x_u]))[8:].detach()
    own_target = model(x_u).detach()
    with pytest.warns(TargetMismatchWarning, match="not the model.s own clean output"):
        mismatched = vat_loss(model, x_u, logits=joint_target, eps=1e-6).item()
    consistent = vat_loss(model, x_u, logits=own_target, eps=1e-6).item()
    assert consistent < 1e-6 and mismatched > 1e-3


@pytest.mark.parametrize("regularize", ["unlabeled", "all"])
def test_trainer_target_matches_perturbed_pass_composition(moons, regularize):
    model = _Recorder(make_mlp(batch_norm=True))
    trainer = Trainer(
        model,
        moons,
        method="vat",
        eps=1e-6,
        regularize=regularize,
        iterations=1,
        eval_every=100,
        batch_size=8,
        unlabeled_batch_size=16,
        progress=False,
    )
    metrics = trainer.train_step(trainer.next_batch())
    assert metrics["vat"].item() < 1e-6  # LDS vanishes with eps: no batch-statistics mismatch
    sizes = model.batch_sizes
    if regularize == "unlabeled":
        # labeled pass, unlabeled target pass, the core's one-time check of the target (first call only),
        # probe, perturbed
        assert sizes == [8, 16, 16, 16, 16]
    else:
        assert sizes == [24, 24, 24, 24]  # joint pass, one-time target check, probe, perturbed


@pytest.mark.slow
def test_vat_with_batchnorm_does_not_collapse_on_digits():
    data = load_digits_data(n_labels=100, seed=0)
    errors = {}
    for method in ("supervised", "vat"):
        torch.manual_seed(0)
        model = MLP(64, 10, hidden_sizes=(128, 64), batch_norm=True)
        result = Trainer(
            model, data, method=method, eps=0.5, iterations=500, eval_every=250, progress=False, seed=0
        ).fit()
        errors[method] = result.final["test_error"]
    assert errors["vat"] < 0.7 * errors["supervised"], errors
