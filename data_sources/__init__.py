"""Data sources: name -> reader of one split as uint8 images at the configured geometry.

See datasets.py for the names a config may use and for batching.
"""
from __future__ import annotations

from typing import Callable

from data_sources import captioned, embedded, local, tfds_catalog, tfrecord
from data_sources.base import ArraySource, DatasetError, Source
from data_sources.preprocess import ImageFormat

#: config.data.dataset (lower-cased) -> loader(config, split, fmt) -> Source. 'tfds:NAME' goes to TFDS too.
LOADERS: dict[str, Callable[..., Source]] = {
    "digits": embedded.digits,
    "mnist": embedded.mnist,
    "fashion_mnist": embedded.fashion_mnist,
    "folder": local.folder,
    "npz": local.npz,
    "idx": local.idx,
    "caption_folder": captioned.caption_folder,
    "caption_table": captioned.caption_table,
    "mnist_pairs": captioned.mnist_pairs,
    **{name: tfds_catalog.named for name in tfds_catalog.CATALOG},
    "celebahq": tfrecord.progan,
    "ffhq": tfrecord.progan,
}


def load_source(config, split: str) -> Source:
    """The `split` ('train' or 'test') of config.data.dataset at config.data.image_size / num_channels."""
    d = config.data
    name = d.dataset.lower()
    if split not in ("train", "test"):
        raise DatasetError(f"Unknown split {split!r}; choose 'train' or 'test'.")
    loader = tfds_catalog.named if name.startswith("tfds:") else LOADERS.get(name)
    if loader is None:
        raise DatasetError(f"Unknown dataset {d.dataset!r} in config.data.dataset; choose one of "
                           f"{sorted(LOADERS)} or 'tfds:NAME'.")
    return loader(config, split, ImageFormat(d.image_size, d.num_channels, d.crop_size))


__all__ = ["ArraySource", "DatasetError", "ImageFormat", "LOADERS", "Source", "load_source"]
