"""The BatchNorm pitfall (a VAT target from a pass with another batch composition) is detected once per model."""

import copy
import warnings

import pytest
import torch
from torch import nn

from torchvat import RNGSnapshot, vat_loss, virtual_adversarial_perturbation
from torchvat.core import TargetMismatchWarning
from torchvat.core.perturbation import _checked_targets


class Counting(nn.Module):
    """A BatchNorm MLP with dropout that counts its forward passes (in an attribute and in a buffer)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(p), nn.Linear(16, 3))
        self.passes = 0
        self.register_buffer("calls", torch.zeros(()))  # replaced in every pass: put back by the check

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        self.calls = self.calls + 1
        return self.net(x)


def _data():
    torch.manual_seed(0)
    return torch.randn(8, 4) + 1.0, torch.randn(32, 4)


def test_a_target_from_a_joint_pass_is_named_once():
    model = Counting().train()
    x_l, x_u = _data()
    joint = model(torch.cat([x_l, x_u]))[8:]
    with pytest.warns(TargetMismatchWarning, match=r"not the model's own clean output on x.*Three things to get right"):
        vat_loss(model, x_u, logits=joint, eps=1e-6)
    # the first call with logits was the check: no warning, no check pass afterwards
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.passes = 0
        vat_loss(model, x_u, logits=joint, eps=1e-6, probe="finite_difference")
    assert model.passes == 2  # one probe pass and the perturbed pass: no check pass
    other = Counting().train()
    with pytest.warns(TargetMismatchWarning):
        virtual_adversarial_perturbation(other, x_u, logits=other(torch.cat([x_l, x_u]))[8:])


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("probe", ["finite_difference", "exact"])
def test_a_target_from_the_rows_own_pass_gives_no_warning_with_dropout_and_under_bf16(autocast, probe):
    model = Counting(p=0.3).train()
    _, x_u = _data()
    with warnings.catch_warnings(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        warnings.simplefilter("error")
        snap = RNGSnapshot.capture()
        logits = model(x_u)
        model.passes = 0
        vat_loss(model, x_u, logits=logits, eps=1.0, probe=probe, rng=snap)
    assert model.passes == 1 + 1 + 1  # the check pass, one power step, the perturbed pass
    assert model in _checked_targets


def test_the_check_consumes_no_random_state_and_changes_nothing():
    model = Counting(p=0.3).train()
    _, x_u = _data()
    checked = copy.deepcopy(model)
    _checked_targets.add(checked)  # as after a first call: no check pass
    results = []
    for net in (model, checked):
        torch.manual_seed(3)
        snap = RNGSnapshot.capture()
        logits = net(x_u)
        lds = vat_loss(net, x_u, logits=logits, eps=1.0, rng=snap)
        lds.backward()
        after = torch.get_rng_state()
        results.append((lds.detach(), after, {k: v.clone() for k, v in net.state_dict().items()}, net.passes))
    (lds_a, rng_a, state_a, passes_a), (lds_b, rng_b, state_b, passes_b) = results
    assert passes_a == passes_b + 1  # the check pass was made, and only there
    assert torch.equal(lds_a, lds_b)
    assert torch.equal(rng_a, rng_b)
    assert state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(model.parameters(), checked.parameters(), strict=True))


def test_no_check_without_batchnorm_in_training_mode():
    _, x_u = _data()
    model = Counting().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.passes = 0
        # eval-mode BatchNorm does not depend on the batch: any given logits are the caller's business
        vat_loss(model, x_u, logits=torch.randn(32, 3), eps=1.0, probe="finite_difference")
    assert model.passes == 2


# issue 17, item 17: bf16 with BatchNorm in training mode over few values per channel


def _bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).train()


@pytest.mark.parametrize("probe", ["exact", "finite_difference"])
def test_a_low_precision_search_through_batchnorm_over_few_values_is_named_once(probe):
    model = _bn_net()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.warns(RuntimeWarning, match=r"vat_loss under torch.bfloat16 .* over 4 values per channel"):
            vat_loss(model, torch.randn(4, 4), probe=probe)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            vat_loss(model, torch.randn(4, 4), probe=probe)  # once per model


def test_no_low_precision_warning_for_large_batches_float32_or_eval_mode():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            vat_loss(_bn_net(), torch.randn(16, 4))
            vat_loss(_bn_net().eval(), torch.randn(4, 4))
        vat_loss(_bn_net(), torch.randn(4, 4))
    model = _bn_net()
    vat_loss(model, torch.randn(4, 4))  # a float32 call does not use up the model's check
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.warns(RuntimeWarning, match="over 4 values"):
        virtual_adversarial_perturbation(model, torch.randn(4, 4))
    assert not model[1]._forward_pre_hooks  # the recording hooks are gone


def test_a_noise_layer_is_not_checked_without_a_replayed_rng_and_is_checked_with_one():
    from torchvat.models import MLP

    def noisy():
        torch.manual_seed(0)
        return MLP(4, 3, hidden_sizes=(16,), noise_std=0.5).train()  # BatchNorm, then noise, per hidden layer

    x_l, x_u = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", TargetMismatchWarning)
        model = noisy()
        vat_loss(model, x_u, logits=model(x_u).detach(), eps=1e-6)  # own pass, noise not replayable: no check
        model = noisy()
        snap = RNGSnapshot.capture(x_u.device)
        logits = model(x_u).detach()
        vat_loss(model, x_u, logits=logits, eps=1e-6, rng=snap)  # own pass replayed: checked, matches
    model = noisy()
    snap = RNGSnapshot.capture(x_u.device)
    joint = model(torch.cat([x_l, x_u]))[8:].detach()
    with pytest.warns(TargetMismatchWarning, match="not the model's own clean output"):
        vat_loss(model, x_u, logits=joint, eps=1e-6, rng=snap)  # the pitfall, with noise: still found
