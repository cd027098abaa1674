import inspect
import itertools
import re

import numpy as np
import pytest
import torch
from torch import nn

from torchvat.models import (
    MLP,
    ConvLarge,
    ConvSmall,
    WideResNet,
    available_models,
    build_model,
    default_model,
    default_model_name,
    scaled_hidden_sizes,
)
from torchvat.models.factory import canonical_model_name, model_class, reserved_arguments

NAMES = ["conv-large", "conv-small", "mlp", "mnist-mlp", "small-mlp", "wrn-28-2"]


def test_available_models():
    assert available_models() == NAMES


@pytest.mark.parametrize(
    ("name", "shape", "cls"),
    [
        ("mlp", (784,), MLP),
        ("mlp", (1, 28, 28), MLP),
        ("mlp", (2,), MLP),
        ("mnist-mlp", (1, 28, 28), MLP),
        ("mnist-mlp", (784,), MLP),
        ("small-mlp", (2,), MLP),
        ("conv-small", (1, 28, 28), ConvSmall),
        ("conv-small", (3, 32, 32), ConvSmall),
        ("conv-large", (1, 28, 28), ConvLarge),
        ("conv-large", (3, 32, 32), ConvLarge),
        ("wrn-28-2", (3, 32, 32), WideResNet),
        ("wrn-28-2", (1, 28, 28), WideResNet),
    ],
)
def test_build_model_output_shapes(name, shape, cls):
    torch.manual_seed(0)
    model = build_model(name, input_shape=shape, n_classes=5)
    assert type(model) is cls
    assert model.training
    assert model(torch.randn(2, *shape)).shape == (2, 5)


def test_mnist_mlp_has_paper_sizes_for_any_input():
    model = build_model("mnist-mlp", input_shape=(100,), n_classes=3)
    assert model.hidden_sizes == (1200, 600, 300, 150)
    assert model.in_features == 100


def test_mlp_hidden_sizes_scale_with_input():
    assert build_model("mlp", input_shape=(784,), n_classes=10).hidden_sizes == (
        1200,
        600,
        300,
        150,
    )
    assert build_model("mlp", input_shape=(64,), n_classes=10).hidden_sizes == (256, 128, 64)
    assert build_model("mlp", input_shape=(20,), n_classes=10).hidden_sizes == (128, 64)
    custom = build_model("mlp", input_shape=(20,), n_classes=2, hidden_sizes=(7,))
    assert custom.hidden_sizes == (7,)


@pytest.mark.parametrize("d", [1, 2, 16, 17, 31, 32, 33, 100, 299, 300, 784, 3072])
def test_scaled_hidden_sizes_rule(d):
    sizes = scaled_hidden_sizes(d)
    assert sizes[0] == min(1200, max(128, 4 * d))
    assert 1 <= len(sizes) <= 4
    assert all(b == a // 2 for a, b in itertools.pairwise(sizes))
    assert min(sizes) >= 64
    assert len(sizes) == 4 or sizes[-1] // 2 < 64


def test_small_mlp_is_the_toy_network():
    model = build_model("small-mlp", input_shape=(2,), n_classes=2)
    linears = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [(2, 100), (100, 100), (100, 2)]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 2
    with_bn = build_model("small-mlp", input_shape=(2,), n_classes=2, batch_norm=True)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in with_bn.modules()) == 2


def test_kwargs_reach_the_constructor():
    model = build_model("conv-large", input_shape=(3, 32, 32), n_classes=10, top_bn=True)
    assert isinstance(model.top_bn, nn.BatchNorm1d)
    model = build_model("wrn-28-2", input_shape=(3, 32, 32), n_classes=10, bn_momentum=0.01)
    assert {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {0.01}
    model = build_model("mnist-mlp", input_shape=(784,), n_classes=10, activation="leaky_relu")
    assert sum(isinstance(m, nn.LeakyReLU) for m in model.modules()) == 4


def test_name_is_normalized():
    assert isinstance(build_model(" Conv_Small ", input_shape=(1, 28, 28), n_classes=2), ConvSmall)
    assert isinstance(build_model("WRN_28_2", input_shape=(3, 32, 32), n_classes=2), WideResNet)


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown model name 'resnet50'.*known names") as info:
        build_model("resnet50", input_shape=(3, 32, 32), n_classes=10)
    for name in NAMES:
        assert name in str(info.value)


def test_name_must_be_a_string():
    with pytest.raises(TypeError, match="name must be a str"):
        build_model(None, input_shape=(2,), n_classes=2)


@pytest.mark.parametrize("shape", [(), (0,), (-3,), (2.5,), (True,), "784", None, 784, [1, 0, 2]])
def test_bad_input_shape(shape):
    with pytest.raises(ValueError, match="input_shape must be a non-empty tuple of positive ints"):
        build_model("mlp", input_shape=shape, n_classes=2)
    with pytest.raises(ValueError, match="input_shape"):
        default_model(shape, 2)


def test_input_shape_may_be_a_list():
    assert isinstance(build_model("conv-small", input_shape=[1, 28, 28], n_classes=2), ConvSmall)


@pytest.mark.parametrize("n_classes", [0, -1, 2.0, True, None, "10"])
def test_bad_n_classes(n_classes):
    with pytest.raises(ValueError, match=f"n_classes must be a positive integer, got {n_classes!r}"):
        build_model("mlp", input_shape=(2,), n_classes=n_classes)
    with pytest.raises(ValueError, match="n_classes"):
        default_model((2,), n_classes)


@pytest.mark.parametrize("name", ["conv-small", "conv-large", "wrn-28-2"])
def test_image_models_need_image_shapes(name):
    with pytest.raises(ValueError, match=f"input_shape for '{name}' must be \\(channels"):
        build_model(name, input_shape=(784,), n_classes=10)


@pytest.mark.parametrize("name", ["conv-small", "conv-large"])
def test_conv_models_need_12_pixels(name):
    with pytest.raises(ValueError, match="height and width >= 12, got \\(1, 8, 8\\)"):
        build_model(name, input_shape=(1, 8, 8), n_classes=10)


@pytest.mark.parametrize(
    ("name", "key"),
    [("mlp", "in_features"), ("conv-small", "in_channels"), ("wrn-28-2", "depth")],
)
def test_derived_arguments_cannot_be_passed(name, key):
    shape = (784,) if name == "mlp" else (3, 32, 32)
    with pytest.raises(TypeError, match=f"derives '{key}'"):
        build_model(name, input_shape=shape, n_classes=10, **{key: 3})


@pytest.mark.parametrize(
    ("name", "key", "source"),
    [
        ("mlp", "in_features", "input_shape"),
        ("conv-large", "in_channels", "input_shape"),
        ("wrn-28-2", "widen_factor", "the name"),
        ("wrn-28-2", "depth", "the name"),
    ],
)
def test_a_derived_argument_names_what_it_is_derived_from(name, key, source):
    shape = (784,) if name == "mlp" else (3, 32, 32)
    with pytest.raises(TypeError, match=f"^build_model\\('{name}'\\) derives '{key}' from {source}; do not pass"):
        build_model(name, input_shape=shape, n_classes=10, **{key: 3})


@pytest.mark.parametrize(
    ("name", "cls", "reserved"),
    [
        ("mlp", MLP, ["in_features", "n_classes"]),
        ("mnist-mlp", MLP, ["in_features", "n_classes"]),
        ("small-mlp", MLP, ["in_features", "n_classes"]),
        ("conv-small", ConvSmall, ["in_channels", "n_classes"]),
        ("conv-large", ConvLarge, ["in_channels", "n_classes"]),
        ("wrn-28-2", WideResNet, ["in_channels", "n_classes", "depth", "widen_factor"]),
    ],
)
def test_model_class_and_reserved_arguments_match_what_build_model_builds(name, cls, reserved):
    shape = (2,) if "mlp" in name else (3, 32, 32)
    assert model_class(name) is cls is type(build_model(name, input_shape=shape, n_classes=3))
    assert list(reserved_arguments(name)) == reserved
    assert all(arg in inspect.signature(cls).parameters for arg in reserved)  # each a constructor argument
    for arg in reserved:
        if arg == "n_classes":  # build_model's own argument: it cannot come in **kwargs
            continue
        with pytest.raises(TypeError, match=f"derives '{arg}'"):
            build_model(name, input_shape=shape, n_classes=3, **{arg: 1})


def test_canonical_model_name_reads_names_as_build_model_does():
    assert canonical_model_name(" Conv_Small ") == "conv-small" and model_class("WRN_28_2") is WideResNet
    assert reserved_arguments("MNIST_MLP") == {"in_features": "input_shape", "n_classes": "n_classes"}
    with pytest.raises(ValueError, match=r"unknown model name 'resnet50'; known names: \['conv-large'"):
        canonical_model_name("resnet50")
    with pytest.raises(TypeError, match="name must be a str"):
        model_class(None)
    reserved_arguments("mlp")["depth"] = "name"  # a copy: the registry is unchanged
    assert "depth" not in reserved_arguments("mlp")


def test_unknown_kwarg_is_a_type_error():
    with pytest.raises(TypeError, match="bogus"):
        build_model("conv-small", input_shape=(1, 28, 28), n_classes=10, bogus=1)


@pytest.mark.parametrize(
    ("shape", "name", "cls"),
    [
        ((2,), "small-mlp", MLP),
        ((16,), "small-mlp", MLP),
        ((17,), "mlp", MLP),
        ((784,), "mlp", MLP),
        ((8, 8), "mlp", MLP),
        ((1, 8, 8), "mlp", MLP),
        ((2, 3, 4, 5), "mlp", MLP),
        ((1, 28, 28), "conv-small", ConvSmall),
        ((3, 16, 16), "conv-small", ConvSmall),
        ((3, 32, 31), "conv-small", ConvSmall),
        ((4, 32, 32), "conv-small", ConvSmall),
        ((3, 32, 32), "conv-large", ConvLarge),
        ((3, 96, 96), "conv-large", ConvLarge),
    ],
)
def test_default_model_choices(shape, name, cls):
    assert default_model_name(shape) == name
    torch.manual_seed(0)
    model = default_model(shape, 4)
    assert type(model) is cls
    if name == "small-mlp":
        assert model.hidden_sizes == (100, 100)
    elif name == "mlp":
        assert model.hidden_sizes == scaled_hidden_sizes(model.in_features)
    if min(shape) <= 32 and len(shape) <= 3:
        assert model(torch.randn(2, *shape)).shape == (2, 4)


def test_default_model_for_flat_mnist_is_the_papers_mlp():
    model = default_model((784,), 10)
    assert model.hidden_sizes == (1200, 600, 300, 150)


def test_numpy_integers_are_accepted_and_stored_as_ints():
    y = np.array([0, 1, 2, 1])
    n_classes = y.max() + 1  # np.int64(3)
    model = build_model("mlp", input_shape=(np.int64(4),), n_classes=n_classes)
    assert isinstance(model, MLP) and type(model.n_classes) is int and type(model.in_features) is int
    assert model(torch.randn(2, 4)).shape == (2, 3)
    assert isinstance(default_model(tuple(np.array([4])), n_classes), MLP)
    conv = build_model("conv-small", input_shape=np.zeros((5, 1, 28, 28)).shape[1:], n_classes=np.int32(2))
    assert type(conv.in_channels) is int and type(conv.n_classes) is int
    assert default_model_name((np.int64(3), np.int64(32), np.int64(32))) == "conv-large"
    assert scaled_hidden_sizes(np.int64(64)) == (256, 128, 64)
    assert type(WideResNet(np.int64(10), np.int64(1), np.int64(3), np.int64(1)).n_classes) is int


@pytest.mark.parametrize("n_classes", [np.True_, np.float64(3.0)])
def test_numpy_bools_and_floats_are_still_refused(n_classes):
    with pytest.raises(ValueError, match="n_classes must be a positive integer, got " + re.escape(repr(n_classes))):
        build_model("mlp", input_shape=(2,), n_classes=n_classes)
    with pytest.raises(ValueError, match=r"input_shape must be a non-empty tuple of positive ints.*got \(np\.True_,\)"):
        build_model("mlp", input_shape=(np.True_,), n_classes=2)


def test_default_model_takes_other_widths_and_keeps_its_batchnorm_choice():
    """The estimators' hidden_layer_sizes go through here: the widths change, the family and BN do not."""
    from torch import nn

    from torchvat.models import default_model

    def has_bn(model: nn.Module) -> bool:
        return any(isinstance(m, nn.BatchNorm1d) for m in model.modules())

    for n_features, batch_norm in ((2, False), (16, False), (17, True), (50, True)):
        engine = default_model((n_features,), 3)
        sized = default_model((n_features,), 3, hidden_sizes=(8, 4))
        assert has_bn(engine) == has_bn(sized) == batch_norm
        assert sized.hidden_sizes == (8, 4)
    with pytest.raises(TypeError, match="derives 'in_features'"):
        default_model((5,), 3, in_features=5)
