"""Datasets for semi-supervised training, preprocessing, augmentation and batching.

Every loader returns a :class:`SemiSupervisedData` with labeled, unlabeled and held-out
tensors in memory.
"""

from torchvat.data.arrays import (
    DOMINANT_VARIANCE_SHARE,
    INFLATED_DEVIATION,
    UNLABELED,
    FeatureScaleWarning,
    encode_labels,
    from_arrays,
    warn_dominant_column,
    warn_inflated_columns,
)
from torchvat.data.augment import RandomTranslateFlip, augment_translate_flip, translate_flip
from torchvat.data.container import SemiSupervisedData
from torchvat.data.digits import load_digits_data
from torchvat.data.fashion_mnist import (
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    find_fashion_mnist,
    load_fashion_mnist,
    load_idx_directory,
)
from torchvat.data.files import CSV_DELIMITERS, IMAGE_EXTENSIONS, load_csv, load_image_folder, load_npz
from torchvat.data.idx import read_idx, write_idx
from torchvat.data.labels import select_labels
from torchvat.data.paths import DATA_ENV_VAR, default_data_root
from torchvat.data.preprocessing import (
    ZCA,
    GlobalContrastZCA,
    Standardizer,
    fit_transform_data,
    global_contrast_normalize,
    standardize,
)
from torchvat.data.registry import available_datasets, load_dataset
from torchvat.data.sampler import InfiniteBatchSampler, InfiniteTensorLoader, iter_batches
from torchvat.data.splits import semi_supervised_split
from torchvat.data.synthetic import make_circles_data, make_moons_data
from torchvat.data.torchvision_sets import DEFAULT_N_LABELS, TORCHVISION_DATASETS, load_torchvision

__all__ = [
    "CSV_DELIMITERS",
    "DATA_ENV_VAR",
    "DEBIAN_FASHION_MNIST_DIR",
    "DEFAULT_N_LABELS",
    "DOMINANT_VARIANCE_SHARE",
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "INFLATED_DEVIATION",
    "TORCHVISION_DATASETS",
    "UNLABELED",
    "ZCA",
    "FeatureScaleWarning",
    "GlobalContrastZCA",
    "InfiniteBatchSampler",
    "InfiniteTensorLoader",
    "RandomTranslateFlip",
    "SemiSupervisedData",
    "Standardizer",
    "augment_translate_flip",
    "available_datasets",
    "default_data_root",
    "encode_labels",
    "find_fashion_mnist",
    "fit_transform_data",
    "from_arrays",
    "global_contrast_normalize",
    "iter_batches",
    "load_csv",
    "load_dataset",
    "load_digits_data",
    "load_fashion_mnist",
    "load_idx_directory",
    "load_image_folder",
    "load_npz",
    "load_torchvision",
    "make_circles_data",
    "make_moons_data",
    "read_idx",
    "select_labels",
    "semi_supervised_split",
    "standardize",
    "translate_flip",
    "warn_dominant_column",
    "warn_inflated_columns",
    "write_idx",
]
