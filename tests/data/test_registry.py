"""The dataset registry: one reading of a dataset's name, and the function its options go to."""

from __future__ import annotations

import inspect

import pytest

from torchvat.data import load_digits_data, load_fashion_mnist, load_torchvision, make_circles_data, make_moons_data
from torchvat.data.registry import (
    available_datasets,
    canonical_dataset_name,
    dataset_options,
    dataset_options_function,
    load_dataset,
)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("moons", "moons"),
        ("two-moons", "moons"),
        (" Two_Moons ", "moons"),
        ("FashionMNIST", "fashion-mnist"),
        ("fashion_mnist", "fashion-mnist"),
        ("CIFAR-10", "cifar10"),
        ("svhn", "svhn"),
    ],
)
def test_canonical_dataset_name_reads_case_separators_and_aliases(name, canonical):
    assert canonical_dataset_name(name) == canonical
    assert canonical in available_datasets()


def test_an_unknown_dataset_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"name must be one of \['moons', 'circles'.*got 'two moons'"):
        canonical_dataset_name("two moons")
    for call in (dataset_options, dataset_options_function, load_dataset):
        with pytest.raises(ValueError, match="got 'imagenet'"):
            call("imagenet")


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("moons", make_moons_data),
        ("circles", make_circles_data),
        ("digits", load_digits_data),
        ("fashion-mnist", load_fashion_mnist),
        ("mnist", load_torchvision),
        ("cifar10", load_torchvision),
        ("svhn", load_torchvision),
    ],
)
def test_the_options_of_a_dataset_are_its_functions_parameters(name, fn):
    assert dataset_options_function(name) is fn
    skip = {"n_labels", "seed", "root", "download", "name", "directory"}
    assert dataset_options(name) == [p for p in inspect.signature(fn).parameters if p not in skip]


def test_an_alias_loads_its_dataset_with_its_options():
    assert dataset_options("two-moons") == dataset_options("moons")
    data = load_dataset("Two_Moons", n_labels=4, n_samples=60)
    assert data.name == "moons" and data.n_labeled == 4
    with pytest.raises(ValueError, match=r"dataset 'moons' takes the options \['n_samples'.*got \['bogus'\] besides"):
        load_dataset("two-moons", bogus=1)
