"""Global contrast normalization before ZCA (Oliver et al. 2018's CIFAR-10 preprocessing, issue 18)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchvat.data import ZCA, GlobalContrastZCA, global_contrast_normalize
from torchvat.runs import DataSpec
from torchvat.runs.build import build_augment, load_run_data_and_transform
from torchvat.runs.errors import UsageError


def _formula(x: np.ndarray, scale: float, eps: float = 1e-10) -> np.ndarray:
    """s (x - mean(x)) / ||x - mean(x)|| per example, written out in NumPy (norms below eps: not divided)."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    out = np.empty_like(flat)
    for i, row in enumerate(flat):
        centred = row - row.sum() / row.size
        norm = np.sqrt((centred**2).sum())
        out[i] = scale * centred / (norm if norm >= eps else 1.0)
    return out.reshape(x.shape)


def test_it_is_the_formula_per_example_with_constant_images_mapped_to_zero():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 4, 4, generator=g, dtype=torch.float64) * torch.arange(1, 7).view(6, 1, 1, 1)
    x[5] = 0.25  # a constant image: no contrast to normalize
    z = global_contrast_normalize(x, scale=55.0)
    np.testing.assert_allclose(z.numpy(), _formula(x.numpy(), 55.0), rtol=1e-12, atol=1e-12)
    norms = z.reshape(6, -1).norm(dim=1)
    torch.testing.assert_close(norms[:5], torch.full((5,), 55.0, dtype=torch.float64))
    assert torch.equal(z[5], torch.zeros_like(z[5]))
    torch.testing.assert_close(z.reshape(6, -1).mean(dim=1), torch.zeros(6, dtype=torch.float64))
    z32 = global_contrast_normalize(x.float(), scale=2.0)
    assert z32.dtype == torch.float32 and z32.shape == x.shape
    np.testing.assert_allclose(z32.numpy(), _formula(x.numpy(), 2.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale", [0, -1.0, True, "55"])
def test_a_bad_scale_is_refused_naming_it(scale):
    with pytest.raises(ValueError, match=r"scale must be a number > 0, got"):
        global_contrast_normalize(torch.ones(2, 3), scale=scale)
    with pytest.raises(ValueError, match=r"gcn_scale must be a number > 0, got"):
        GlobalContrastZCA(gcn_scale=scale)


def test_the_transform_is_zca_fitted_on_the_normalized_inputs_and_its_state_round_trips():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(300, 2, 3, 3, generator=g, dtype=torch.float64)
    t = GlobalContrastZCA(eps=0.1, gcn_scale=55.0).fit(x)
    zca = ZCA(eps=0.1).fit(torch.from_numpy(_formula(x.numpy(), 55.0)))
    torch.testing.assert_close(t.transform(x[:7]), zca.transform(torch.from_numpy(_formula(x[:7].numpy(), 55.0))))
    # the inverse undoes the ZCA: the contrast-normalized images come back
    torch.testing.assert_close(t.inverse_transform(t.transform(x[:7])), global_contrast_normalize(x[:7]))
    other = GlobalContrastZCA()
    other.load_state_dict(t.state_dict())
    assert other.gcn_scale == 55.0 and other.eps == 0.1
    torch.testing.assert_close(other.transform(x[:7]), t.transform(x[:7]))
    with pytest.raises(KeyError, match="gcn_scale"):
        GlobalContrastZCA().load_state_dict(ZCA().fit(x).state_dict())


def test_a_run_names_it_gcn_zca_and_pads_augmentation_with_the_whitened_mean():
    spec = DataSpec(dataset="digits", n_labels=20, preprocess="gcn-zca", zca_eps=0.1, gcn_scale=55.0)
    data, transform = load_run_data_and_transform(spec, seed=0)
    assert isinstance(transform, GlobalContrastZCA) and transform.gcn_scale == 55.0
    raw, _ = load_run_data_and_transform(DataSpec(dataset="digits", n_labels=20), seed=0)
    torch.testing.assert_close(data.x_test, transform.transform(raw.x_test))
    augment_spec = DataSpec(dataset="digits", preprocess="gcn-zca", augment="translate")
    augment = build_augment(augment_spec, seed=0)
    assert augment is not None and augment.fill == 0.0
    with pytest.raises(UsageError, match=r"gcn_scale must be a number > 0, got 0"):
        DataSpec(dataset="digits", preprocess="gcn-zca", gcn_scale=0).validate()
