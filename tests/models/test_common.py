"""Properties every network of torchvat.models must have."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchvat.models import available_models, build_model

# (name, input_shape, extra kwargs) covering every model and the paper's variants.
CASES = [
    ("mlp", (784,), {}),
    ("mnist-mlp", (1, 28, 28), {"top_bn": True}),
    ("mnist-mlp", (784,), {"activation": "leaky_relu", "dropout": 0.2}),
    ("small-mlp", (2,), {}),
    ("small-mlp", (2,), {"batch_norm": True}),
    ("conv-small", (1, 28, 28), {}),
    ("conv-small", (3, 32, 32), {"top_bn": True}),
    ("conv-large", (1, 28, 28), {"top_bn": True}),
    ("conv-large", (3, 32, 32), {}),
    ("wrn-28-2", (3, 32, 32), {}),
]
IDS = [f"{name}-{'x'.join(map(str, shape))}-{len(kw)}" for name, shape, kw in CASES]


def test_cases_cover_every_model():
    assert {name for name, _, _ in CASES} == set(available_models())


@pytest.mark.parametrize(("name", "shape", "kwargs"), CASES, ids=IDS)
def test_gradients_reach_every_parameter(name, shape, kwargs):
    torch.manual_seed(0)
    model = build_model(name, input_shape=shape, n_classes=3, **kwargs)
    x = torch.randn(4, *shape)
    y = torch.tensor([0, 1, 2, 1])
    F.cross_entropy(model(x), y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize(("name", "shape", "kwargs"), CASES, ids=IDS)
def test_deterministic_given_seed_in_train_and_eval(name, shape, kwargs):
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    outputs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model(name, input_shape=shape, n_classes=3, **kwargs)
        train_out = model(x)  # dropout draws from the global generator
        model.eval()
        eval_out = model(x[:1])
        outputs.append((model.state_dict(), train_out, eval_out))
    (sd1, tr1, ev1), (sd2, tr2, ev2) = outputs
    assert sd1.keys() == sd2.keys()
    for key in sd1:
        assert torch.equal(sd1[key], sd2[key]), key
    assert torch.equal(tr1, tr2)
    assert torch.equal(ev1, ev2)
    assert tr1.shape == (2, 3)
    assert ev1.shape == (1, 3)
    assert torch.isfinite(tr1).all()
    assert torch.isfinite(ev1).all()


@pytest.mark.parametrize(("name", "shape", "kwargs"), CASES, ids=IDS)
def test_plain_module_without_torchscript(name, shape, kwargs):
    model = build_model(name, input_shape=shape, n_classes=3, **kwargs)
    assert isinstance(model, nn.Module)
    assert not any(isinstance(m, torch.jit.ScriptModule) for m in model.modules())


def test_different_seeds_give_different_weights():
    torch.manual_seed(0)
    a = build_model("conv-small", input_shape=(1, 28, 28), n_classes=3)
    torch.manual_seed(1)
    b = build_model("conv-small", input_shape=(1, 28, 28), n_classes=3)
    assert not torch.equal(a.features[0][0].weight, b.features[0][0].weight)
