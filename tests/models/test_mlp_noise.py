"""Hidden-layer Gaussian noise of the MNIST MLP (issue 18, item 1: the TPAMI 2018 MNIST setting)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchvat import vat_loss
from torchvat.core import RNGSnapshot
from torchvat.models import MLP, build_model
from torchvat.models.mlp import GaussianNoise


def _net(noise_std: float, **kwargs) -> MLP:
    torch.manual_seed(0)
    return MLP(in_features=6, n_classes=3, hidden_sizes=(16, 8), noise_std=noise_std, **kwargs)


def test_off_by_default_and_no_module():
    model = MLP(in_features=6, n_classes=3, hidden_sizes=(16, 8))
    assert not any(isinstance(m, GaussianNoise) for m in model.modules())


def test_added_after_batchnorm_before_the_activation_of_every_hidden_layer():
    kinds = [type(m) for m in _net(0.5).features]
    assert kinds == [nn.Linear, nn.BatchNorm1d, GaussianNoise, nn.ReLU] * 2
    kinds = [type(m) for m in _net(0.5, batch_norm=False).features]
    assert kinds == [nn.Linear, GaussianNoise, nn.ReLU] * 2
    assert all(m.std == 0.5 for m in _net(0.5).modules() if isinstance(m, GaussianNoise))


def test_training_only_and_its_standard_deviation():
    noise = GaussianNoise(0.5)
    x = torch.zeros(20000, 4)
    torch.manual_seed(0)
    drawn = noise(x)
    assert drawn.std().item() == pytest.approx(0.5, rel=0.02) and drawn.mean().abs().item() < 0.01
    assert torch.equal(noise.eval()(x), x)
    model = _net(0.5).eval()
    x = torch.randn(8, 6)
    assert torch.equal(model(x), model(x))  # eval: deterministic
    model.train()
    assert not torch.allclose(model(x), model(x))  # training: noisy


def test_noise_does_not_enter_the_batch_statistics():
    # after BatchNorm: the running statistics (used in evaluation, without noise) are the clean ones
    clean, noisy = _net(0.0), _net(0.5)
    x = torch.randn(64, 6)
    clean(x), noisy(x)
    assert torch.equal(clean.features[1].running_var, noisy.features[1].running_var)


def test_state_dict_keys_of_a_noisy_model_are_those_of_dropout_style_layers():
    # the noise has no parameter or buffer: only its position shifts the later layer indices
    assert not list(GaussianNoise(0.5).state_dict())
    noisy = _net(0.5)
    assert {k.split(".")[-1] for k in noisy.state_dict()} == {k.split(".")[-1] for k in _net(0.0).state_dict()}


def test_vat_at_tiny_eps_is_zero_with_noise_as_with_dropout():
    # the dropout-mask rule: the probe and perturbed passes replay the clean pass's noise, so the
    # divergence at r -> 0 vanishes; with fresh noise it would stay at the noise's own divergence
    model = _net(0.5).train()
    x = torch.randn(32, 6)
    lds = [
        vat_loss(model, x, eps=eps, generator=torch.Generator().manual_seed(0)).item()
        for eps in (1.0, 1e-1, 1e-2, 1e-3)
    ]
    assert lds[0] > 1e-3
    assert lds[3] < 1e-6
    assert lds[2] / lds[1] == pytest.approx(1e-2, rel=0.2)  # quadratic in eps: no noise floor
    # with the caller's clean pass: the snapshot taken before it gives the same noise
    snap = RNGSnapshot.capture()
    logits = model(x)
    assert vat_loss(model, x, logits=logits, eps=1e-3, rng=snap).item() < 1e-6
    # without the replay the noise differs and the divergence does not vanish
    logits = model(x)
    fresh = vat_loss(model, x, logits=logits.detach(), eps=1e-3, rng=RNGSnapshot.capture())
    assert fresh.item() > 1e-3


def test_the_factory_passes_noise_std_to_the_mnist_mlp():
    model = build_model("mnist-mlp", input_shape=(1, 28, 28), n_classes=10, noise_std=0.5)
    stds = [m.std for m in model.modules() if isinstance(m, GaussianNoise)]
    assert stds == [0.5] * 4  # each of the four hidden layers of 1200-600-300-150


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (-0.1, ValueError, r"noise_std must be a finite float >= 0, got -0.1"),
        (float("inf"), ValueError, r"noise_std must be a finite float >= 0, got inf"),
        ("0.5", TypeError, r"noise_std must be a finite float >= 0, got '0.5'"),
        (True, TypeError, r"noise_std must be a finite float >= 0, got True"),
    ],
)
def test_bad_noise_std_is_refused(value, error, match):
    with pytest.raises(error, match=match):
        MLP(in_features=6, n_classes=3, noise_std=value)
