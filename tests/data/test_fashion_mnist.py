import numpy as np
import pytest
import torch

from torchvat.data import (
    DATA_ENV_VAR,
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    find_fashion_mnist,
    load_fashion_mnist,
)

from ._fake_mnist import fake_arrays, write_fake


def test_debian_package_files(monkeypatch):
    # Needs `apt-get install dataset-fashion-mnist` (done in .ci/run).
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    assert find_fashion_mnist() == DEBIAN_FASHION_MNIST_DIR
    data = load_fashion_mnist(n_labels=100, seed=0)
    assert data.x_unlabeled.shape == (60000, 1, 28, 28)
    assert data.x_test.shape == (10000, 1, 28, 28) and data.y_test.shape == (10000,)
    assert data.n_classes == 10 and data.classes == FASHION_MNIST_CLASSES
    assert torch.bincount(data.y_labeled, minlength=10).tolist() == [10] * 10
    assert torch.bincount(data.y_test, minlength=10).tolist() == [1000] * 10
    assert float(data.x_test.min()) == 0.0 and float(data.x_test.max()) == 1.0


@pytest.mark.parametrize("gz", [True, False])
def test_explicit_root_gz_or_plain(tmp_path, gz):
    arrays = fake_arrays()
    write_fake(tmp_path, arrays, gz=gz)
    data = load_fashion_mnist(tmp_path, n_labels=20, n_val=10, flatten=True)
    assert data.input_shape == (784,)
    assert data.n_labeled == 20 and data.x_val.shape[0] == 10 and data.n_unlabeled == 40
    expected = torch.from_numpy(arrays["x_test"].reshape(20, -1).astype(np.float32) / 255)
    assert torch.allclose(data.x_test, expected)


def test_env_var_is_searched(tmp_path, monkeypatch):
    write_fake(tmp_path / "fashion-mnist", fake_arrays(), gz=True)
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    assert find_fashion_mnist() == tmp_path / "fashion-mnist"
    assert load_fashion_mnist(n_labels=10).x_unlabeled.shape == (50, 1, 28, 28)


def test_missing_root_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "empty")


def test_files_downloaded_to_the_default_cache_are_found(tmp_path, monkeypatch):
    import torchvat.data.fashion_mnist as fm

    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(fm, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian-package")
    raw = tmp_path / ".cache" / "torchvat" / "data" / "FashionMNIST" / "raw"
    write_fake(raw, fake_arrays(), gz=False)
    assert find_fashion_mnist() == raw
    assert load_fashion_mnist(n_labels=10).x_unlabeled.shape == (50, 1, 28, 28)
