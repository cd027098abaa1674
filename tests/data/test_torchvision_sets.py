import sys

import numpy as np
import pytest
import torch

from torchvat.data import load_dataset, load_torchvision

from ._fake_mnist import fake_arrays, write_fake


@pytest.fixture
def fake_root(tmp_path):
    arrays = fake_arrays()
    # torchvision's layout: un-gzipped raw files under <root>/<ClassName>/raw/.
    write_fake(tmp_path / "MNIST" / "raw", arrays, gz=False)
    write_fake(tmp_path / "FashionMNIST" / "raw", arrays, gz=False)
    return tmp_path, arrays


def test_mnist_from_fake_raw_directory(fake_root):
    root, arrays = fake_root
    data = load_torchvision("mnist", root, n_labels=20, seed=0)
    assert data.name == "mnist" and data.n_classes == 10
    assert data.x_unlabeled.shape == (50, 1, 28, 28) and data.x_test.shape == (20, 1, 28, 28)
    assert torch.bincount(data.y_labeled, minlength=10).tolist() == [2] * 10
    expected = torch.from_numpy(arrays["x_train"].astype(np.float32) / 255).unsqueeze(1)
    assert torch.allclose(data.x_unlabeled, expected)
    assert data.y_test.tolist() == arrays["y_test"].tolist()


def test_fashion_mnist_through_torchvision_and_registry(fake_root):
    root, _ = fake_root
    via_tv = load_torchvision("fashion-mnist", root, n_labels=10, flatten=True)
    assert via_tv.input_shape == (784,) and via_tv.classes[9] == "Ankle boot"
    # The registry reads the same raw directory without torchvision.
    direct = load_dataset("fashion_mnist", root=root, n_labels=10, flatten=True)
    assert torch.equal(direct.x_labeled, via_tv.x_labeled)
    assert torch.equal(direct.y_labeled, via_tv.y_labeled)


def test_load_dataset_mnist_default_labels(fake_root):
    root, _ = fake_root
    with pytest.raises(ValueError, match="n_labels=100 exceeds"):
        load_dataset("MNIST", root=root)  # the paper's 100 labels, only 50 images here
    assert load_dataset("MNIST", root=root, n_labels=30).n_labeled == 30


def test_missing_cifar10_explains_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"download=True.*cifar-10-batches-py"):
        load_torchvision("cifar10", tmp_path)
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_dataset("svhn", root=tmp_path / "absent")


def test_unknown_name():
    with pytest.raises(ValueError, match="name must be one of"):
        load_torchvision("imagenet", ".")


def test_missing_torchvision_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ImportError, match=r"pip install torchvat\[vision\]"):
        load_torchvision("mnist", tmp_path)
