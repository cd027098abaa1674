"""Smoke test of the Fashion-MNIST recipe benchmark on small fake IDX files (no timing assertions)."""

import argparse

import numpy as np
import pytest

from torchvat.data import write_idx

from ._bench import load as _load

bench = _load("fashion_mnist_recipes")


def _fake_fashion_mnist(directory, n_train=200, n_test=40):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    directory.mkdir()
    for stem, array in arrays.items():
        write_idx(directory / f"{stem}.gz", array)
    return directory


def test_the_tpami_row_from_a_given_folder_writes_its_table(tmp_path, capsys):
    # what benchmarks/gpu_checks.sh section 5 runs, with 10 iterations in place of the recipe's
    root = _fake_fashion_mnist(tmp_path / "fm")
    table = tmp_path / "table.md"
    args = ["--rows", "tpami", "--seeds", "1", "--labels", "100", "--iterations", "10"]
    bench.main([*args, "--data-root", str(root), "--table", str(table)])
    out = capsys.readouterr().out
    assert "tpami labels=100 seed=0: step 10/10 test error" in out  # one line per evaluation
    text = table.read_text()
    assert text.startswith("device cpu, torch ") and "| tpami | 100 | 0 | 10 | 5 |" in text
    assert "| ms per iteration |" in text


def test_iterations_recipe_is_the_recipes_own():
    assert bench._iterations("recipe") == 48_000 and bench._iterations("12") == 12
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer or 'recipe', got 'all'"):
        bench._iterations("all")
