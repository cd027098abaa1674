import numpy as np
import pytest
import torch

from torchvat.data import select_labels


@pytest.fixture
def y():
    # 3 classes with 10, 20, 30 examples, in shuffled order.
    labels = torch.tensor([0] * 10 + [1] * 20 + [2] * 30)
    return labels[torch.randperm(60, generator=torch.Generator().manual_seed(1))]


def test_balanced_counts_per_class(y):
    idx = select_labels(y, 9, seed=0)
    assert idx.dtype == torch.int64
    assert idx.unique().numel() == 9
    assert torch.bincount(y[idx], minlength=3).tolist() == [3, 3, 3]


def test_remainder_goes_to_first_classes(y):
    idx = select_labels(y, 11, seed=0)
    assert torch.bincount(y[idx], minlength=3).tolist() == [4, 4, 3]


def test_same_seed_same_indices_other_seed_differs(y):
    a = select_labels(y, 9, seed=3)
    b = select_labels(y, 9, seed=3)
    c = select_labels(y, 9, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_numpy_input_and_n_classes(y):
    idx = select_labels(y.numpy(), 8, n_classes=4, balanced=False, seed=0)
    assert idx.numel() == 8 and idx.unique().numel() == 8
    assert torch.equal(idx, select_labels(np.asarray(y), 8, balanced=False, seed=0))


def test_unbalanced_is_a_uniform_subset(y):
    idx = select_labels(y, 60, balanced=False)
    assert torch.equal(idx, torch.arange(60))


def test_fewer_labels_than_classes(y):
    with pytest.raises(ValueError, match="n_labels=2 is smaller than n_classes=3"):
        select_labels(y, 2)


def test_class_with_too_few_examples(y):
    with pytest.raises(ValueError, match=r"class 0 has 10 \(needs 12\)"):
        select_labels(y, 36)


def test_more_labels_than_examples(y):
    with pytest.raises(ValueError, match="n_labels=61 exceeds"):
        select_labels(y, 61)


@pytest.mark.parametrize("bad", [0, -3])
def test_non_positive_n_labels(y, bad):
    with pytest.raises(ValueError, match="n_labels must be a positive integer"):
        select_labels(y, bad)


def test_labels_out_of_range(y):
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\)"):
        select_labels(y, 6, n_classes=2)


def test_float_labels_rejected():
    with pytest.raises(TypeError, match="integer class indices"):
        select_labels(torch.tensor([0.0, 1.0]), 2)
