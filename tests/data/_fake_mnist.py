"""Writers of small fake (Fashion-)MNIST directories for the tests."""

import numpy as np

from torchvat.data import write_idx

STEMS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def fake_arrays(n_train=50, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(n_test) % 10).astype(np.uint8),
    }


def write_fake(directory, arrays, *, gz):
    directory.mkdir(parents=True, exist_ok=True)
    for key, stem in STEMS.items():
        write_idx(directory / (stem + (".gz" if gz else "")), arrays[key])
