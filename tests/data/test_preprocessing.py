import pytest
import torch

from torchvat.data import ZCA, Standardizer, fit_transform_data, make_moons_data, standardize


@pytest.fixture
def correlated():
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[3.0, 0.0, 0.0, 0.0], [2.0, 1.5, 0.0, 0.0], [1.0, 1.0, 2.0, 0.0], [0.5, 0.0, 1.0, 1.2]])
    return torch.randn(4000, 4, generator=g) @ mix.T + 5.0


def test_zca_gives_identity_covariance(correlated):
    cov_before = torch.cov(correlated.T)
    assert (cov_before - torch.diag(cov_before.diag())).abs().max() > 1.0
    zca = ZCA().fit(correlated)  # default eps=1e-2, eigenvalues >= ~1
    z = zca.transform(correlated)
    assert torch.allclose(z.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(torch.cov(z.T, correction=0), torch.eye(4), atol=0.02)
    # ZCA is the symmetric whitening: the closest whitened data to the original.
    assert torch.allclose(zca.components, zca.components.T, atol=1e-5)


def test_zca_images_state_dict_and_inverse():
    x = torch.rand(64, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    zca = ZCA(eps=0.1).fit(x)
    z = zca(x)
    assert z.shape == x.shape
    restored = ZCA()
    restored.load_state_dict(zca.state_dict())
    assert restored.eps == 0.1 and restored.input_shape == (1, 3, 3)
    assert torch.allclose(restored.transform(x), z)
    assert torch.allclose(restored.inverse_transform(z), x, atol=1e-4)
    with pytest.raises(ValueError, match=r"per-example shape \(1, 3, 3\), got \(9,\)"):
        zca.transform(x.reshape(64, 9))


def test_unfitted_and_bad_eps():
    with pytest.raises(RuntimeError, match="ZCA is not fitted"):
        ZCA().transform(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="eps must be non-negative, got -1"):
        ZCA(eps=-1)


def test_standardizer(correlated):
    s = Standardizer().fit(correlated)
    z = s.transform(correlated)
    assert torch.allclose(z.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(z.std(0, correction=0), torch.ones(4), atol=1e-4)
    assert torch.allclose(s.inverse_transform(z), correlated, atol=1e-4)
    other = Standardizer()
    other.load_state_dict(s.state_dict())
    assert torch.equal(other.transform(correlated), z)


def test_fit_transform_data_fits_on_training_inputs_only():
    data = make_moons_data(n_samples=300, n_test=100)
    data.x_test = data.x_test + 10.0  # a shifted test set must not move the fitted mean
    out = standardize(data)
    assert torch.allclose(out.x_unlabeled.mean(0), torch.zeros(2), atol=1e-5)
    assert float(out.x_test.mean()) > 5.0
    zca = ZCA()
    white = fit_transform_data(data, zca)
    assert torch.allclose(white.x_labeled, zca.transform(data.x_labeled))


def test_zca_with_eps_zero_whitens_fully_and_maps_constant_directions_to_zero():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(400, 5, generator=g, dtype=torch.float64) @ torch.rand(5, 5, generator=g, dtype=torch.float64)
    z = ZCA(eps=0.0).fit(x).transform(x)
    torch.testing.assert_close(torch.cov(z.T, correction=0), torch.eye(5, dtype=torch.float64), atol=1e-8, rtol=0)
    partial = ZCA(eps=1e-2).fit(x).transform(x)
    assert float(partial.norm(dim=1).median()) < float(z.norm(dim=1).median())  # eps sets the scale
    x[:, 2] = 0.7  # a constant pixel: no variance to whiten
    zca = ZCA(eps=0.0).fit(x)
    z = zca.transform(x)
    assert bool(torch.isfinite(z).all())
    cov = torch.cov(z.T, correction=0)
    assert torch.linalg.matrix_rank(cov) == 4
    torch.testing.assert_close(torch.linalg.eigvalsh(cov)[1:], torch.ones(4, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(zca.inverse_transform(z), x, atol=1e-8, rtol=0)
