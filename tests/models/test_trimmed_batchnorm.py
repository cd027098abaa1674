"""``TrimmedBatchNorm1d``: BatchNorm whose batch statistics leave out far values, and the MLPs that use it."""

import copy

import pytest
import torch
from torch import nn

from torchvat import vat_loss
from torchvat.models import MLP, TrimmedBatchNorm1d, build_model, default_model
from torchvat.models.norm import MIN_TRIMMED_ROWS


def _pair(features: int = 3, **kwargs):
    torch.manual_seed(0)
    plain = nn.BatchNorm1d(features, **kwargs)
    trimmed = TrimmedBatchNorm1d(features, **kwargs)
    with torch.no_grad():
        for bn in (plain, trimmed):
            if bn.affine:
                bn.weight.copy_(torch.tensor([1.5, 0.5, 2.0][:features]))
                bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3][:features]))
    return plain, trimmed


def test_without_far_values_it_is_batchnorm():
    plain, trimmed = _pair()
    x = torch.rand(64, 3, generator=torch.Generator().manual_seed(1))  # uniform: nothing beyond 5 robust stds
    for _ in range(3):
        torch.testing.assert_close(trimmed(x), plain(x))
    torch.testing.assert_close(trimmed.running_mean, plain.running_mean)
    torch.testing.assert_close(trimmed.running_var, plain.running_var)
    assert int(trimmed.num_batches_tracked) == int(plain.num_batches_tracked) == 3
    plain.eval(), trimmed.eval()
    torch.testing.assert_close(trimmed(x), plain(x))


def test_a_far_row_leaves_the_other_rows_statistics_alone():
    plain, trimmed = _pair()
    x = torch.randn(63, 3, generator=torch.Generator().manual_seed(2))
    far = torch.tensor([[0.0, 400.0, 0.0]])  # one row far out on the second unit only
    batch = torch.cat([x, far])
    out = trimmed(batch).detach()
    # the second unit: the statistics of the other rows alone, and the far row normalized with them
    torch.testing.assert_close(out[:63, 1], plain(x).detach()[:, 1])
    assert float(out[63, 1]) > 100
    # the other units, where the row is not far: every row, as BatchNorm
    everyone = copy.deepcopy(plain).train()(batch).detach()
    torch.testing.assert_close(out[:, [0, 2]], everyone[:, [0, 2]])
    # plain BatchNorm, for contrast, squashes the second unit of every other row
    assert float(everyone[:63, 1].std()) < 0.2 < float(out[:63, 1].std())


def test_running_statistics_are_the_trimmed_ones():
    plain, trimmed = _pair()
    x = torch.randn(63, 3, generator=torch.Generator().manual_seed(3))
    trimmed(torch.cat([x, torch.full((1, 3), 1e3)]))
    plain(x)
    torch.testing.assert_close(trimmed.running_mean, plain.running_mean)
    torch.testing.assert_close(trimmed.running_var, plain.running_var)


def test_cumulative_average_with_momentum_none():
    plain, trimmed = _pair(momentum=None)
    g = torch.Generator().manual_seed(4)
    for _ in range(4):
        x = torch.rand(32, 3, generator=g)
        trimmed(x), plain(x)
    torch.testing.assert_close(trimmed.running_mean, plain.running_mean)
    torch.testing.assert_close(trimmed.running_var, plain.running_var)


def test_small_batches_and_three_dimensional_inputs_are_batchnorms():
    plain, trimmed = _pair()
    small = torch.randn(MIN_TRIMMED_ROWS - 1, 3)
    small[0, 0] = 1e3
    torch.testing.assert_close(trimmed(small), plain(small))
    seq = torch.randn(16, 3, 5)
    seq[0, 0, 0] = 1e3
    torch.testing.assert_close(trimmed(seq), plain(seq))


def test_without_running_statistics_it_trims_in_eval_mode_too():
    plain, trimmed = _pair(track_running_stats=False)
    x = torch.randn(63, 3, generator=torch.Generator().manual_seed(5))
    trimmed.eval(), plain.eval()
    torch.testing.assert_close(trimmed(torch.cat([x, torch.full((1, 3), 1e3)]))[:63], plain(x))


def test_low_precision_inputs_keep_their_dtype_and_statistics_stay_float32():
    _, trimmed = _pair()
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(6))
    out = trimmed(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and trimmed.running_mean.dtype == torch.float32
    assert torch.isfinite(out.float()).all()


def test_gradients_reach_the_input_and_the_affine_parameters():
    _, trimmed = _pair()
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(7))
    x[0, 1] = 1e3
    x.requires_grad_(True)
    trimmed(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert trimmed.weight.grad is not None and trimmed.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_trim_must_be_a_positive_finite_number(bad):
    with pytest.raises(ValueError, match=rf"trim must be a finite float > 0 or None, got {bad!r}"):
        TrimmedBatchNorm1d(3, trim=bad)
    with pytest.raises(ValueError, match=r"bn_trim must be a finite float > 0 or None"):
        MLP(4, 2, hidden_sizes=(8,), bn_trim=bad)
    with pytest.raises(TypeError, match=r"trim must be a finite float > 0 or None, got 'five'"):
        TrimmedBatchNorm1d(3, trim="five")


def test_mlps_trim_only_when_asked():
    trimmed = build_model("mlp", input_shape=(64,), n_classes=10, bn_trim=5.0)
    assert [m.trim for m in trimmed.modules() if isinstance(m, nn.BatchNorm1d)] == [5.0, 5.0, 5.0]
    assert "trim=5.0" in repr(trimmed)
    for model in (
        default_model((50,), 10),  # the engine's default network for vectors: plain BatchNorm
        build_model("mlp", input_shape=(64,), n_classes=10),
        build_model("mnist-mlp", input_shape=(784,), n_classes=10),
    ):
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
        assert norms and not any(isinstance(m, TrimmedBatchNorm1d) for m in norms)


@pytest.mark.parametrize("probe", ["finite_difference", "exact"])
def test_vat_leaves_the_parameters_and_running_statistics_as_found(probe):
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(20,), n_classes=4, bn_trim=5.0).train()
    x = torch.randn(32, 20)
    x[0, 3] = 60.0  # a row far out on one feature
    before = copy.deepcopy(model.state_dict())
    loss = vat_loss(model, x, eps=1.0, probe=probe, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], msg=key)


def test_the_exact_probe_matches_the_finite_difference_one():
    from torchvat import virtual_adversarial_perturbation

    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(20,), n_classes=4, bn_trim=5.0).double().train()
    x = torch.randn(32, 20, dtype=torch.float64)
    x[0, 3] = 60.0
    r = {
        probe: virtual_adversarial_perturbation(
            model, x, eps=1.0, probe=probe, xi=1e-6, generator=torch.Generator().manual_seed(1)
        )
        for probe in ("exact", "finite_difference")
    }
    cos = nn.functional.cosine_similarity(r["exact"], r["finite_difference"], dim=1)
    assert float(cos.min()) > 0.999
