import pytest
import torch

from torchvat.data import (
    available_datasets,
    load_dataset,
    load_digits_data,
    make_circles_data,
    make_moons_data,
)


def test_moons_shapes_and_defaults():
    data = make_moons_data()
    assert data.x_unlabeled.shape == (1000, 2) and data.x_test.shape == (1000, 2)
    assert data.n_labeled == 8
    assert torch.bincount(data.y_labeled).tolist() == [4, 4]
    assert data.x_labeled.dtype == torch.float32


def test_moons_test_set_is_a_different_draw_and_seeded():
    data = make_moons_data(n_samples=200, n_test=200, seed=1)
    assert not torch.allclose(data.x_unlabeled, data.x_test)
    again = make_moons_data(n_samples=200, n_test=200, seed=1)
    assert torch.equal(again.x_unlabeled, data.x_unlabeled)
    assert torch.equal(again.x_labeled, data.x_labeled)
    other = make_moons_data(n_samples=200, n_test=200, seed=2)
    assert not torch.equal(other.x_unlabeled, data.x_unlabeled)


def test_circles_radii():
    data = make_circles_data(n_labels=10, n_samples=400, noise=0.0, factor=0.5, n_test=0)
    radius = data.x_unlabeled.norm(dim=1)
    assert torch.allclose(radius.sort().values[[0, -1]], torch.tensor([0.5, 1.0]), atol=1e-5)
    assert data.n_labeled == 10 and data.x_test is None


def test_digits_split_sizes():
    data = load_digits_data(n_labels=100, seed=0)
    assert data.x_test.shape == (540, 64) and data.n_unlabeled == 1797 - 540
    assert torch.bincount(data.y_labeled).tolist() == [10] * 10
    assert 0.0 <= float(data.x_unlabeled.min()) and float(data.x_unlabeled.max()) == 1.0
    # Stratified test split: every class keeps its share (each class has 174-183 images).
    assert torch.bincount(data.y_test).min() >= 52


def test_digits_as_images_disjoint_unlabeled():
    data = load_digits_data(n_labels=50, as_images=True, unlabeled_includes_labeled=False)
    assert data.input_shape == (1, 8, 8)
    assert data.n_labeled + data.n_unlabeled == 1257


def test_digits_bad_test_fraction():
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\), got 1.5"):
        load_digits_data(test_fraction=1.5)


def test_registry_names_and_defaults():
    names = available_datasets()
    assert set(names) == {"moons", "circles", "digits", "mnist", "fashion-mnist", "cifar10", "svhn"}
    assert load_dataset("Moons", n_samples=50, n_test=0).n_labeled == 8
    assert load_dataset("digits").n_labeled == 100
    assert load_dataset("circles", n_labels=6, seed=3, n_samples=60).n_labeled == 6


def test_registry_unknown_name_lists_known():
    with pytest.raises(ValueError, match=r"must be one of \['moons', 'circles'.*got 'imagenet'"):
        load_dataset("imagenet")
