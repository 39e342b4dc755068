"""A user's own data: a folder of images, an .npz of arrays, or MNIST-format IDX files.

config.data.path names the training split's data (and config.data.eval_path the
test split's; empty: the training data, as score_sde does for datasets without
a test split). Folders are decoded lazily, one batch at a time, so they need
not fit in memory; .npz and IDX files are loaded whole.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import zipfile
import zlib

import numpy as np

from data_sources.base import ArraySource, DatasetError, parallel_map, stack_images
from data_sources.preprocess import ImageFormat

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def split_path(config, split: str) -> str:
    """config.data.path for 'train'; config.data.eval_path (or else path) for 'test'."""
    d = config.data
    path = d.path if split == "train" or not d.eval_path else d.eval_path
    if not path:
        raise DatasetError(f"config.data.dataset={d.dataset!r} reads local files: set config.data.path.")
    return os.path.expanduser(path)


# ----------------------------------------------------------------------------- folder of images

def decode_image(path: str, fmt: ImageFormat) -> np.ndarray:
    """The image file at path as uint8 (size, size, channels) in the geometry fmt; DatasetError if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return fmt(np.asarray(im.convert("L" if im.mode in _GRAY_MODES else "RGB")))
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"Cannot read image {path}: {e}; fix or remove the file.") from e


@dataclasses.dataclass(frozen=True)
class FolderSource:
    """Image files decoded on demand. Label: index of the file's top-level subfolder among the sorted
    subfolder names ('' for files directly in the folder), as in torchvision's ImageFolder."""

    paths: tuple[str, ...]
    labels: np.ndarray
    fmt: ImageFormat

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = parallel_map(lambda i: decode_image(self.paths[i], self.fmt), indices)
        return stack_images(images, self.fmt), self.labels[indices]


def list_images(root: str) -> list[str]:
    """Paths of the image files below root, relative to it, sorted."""
    found = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        subfolders.sort()
        found += [os.path.relpath(os.path.join(folder, f), root) for f in files
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return sorted(found)


def check_images(paths) -> None:
    """Reads each file's header now, so that a missing or broken image fails before training."""
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path):
                pass
        except (OSError, SyntaxError, ValueError) as e:
            raise DatasetError(f"Cannot read image {path}: {e}; fix or remove the file.") from e


def folder_source(root: str, fmt: ImageFormat) -> FolderSource:
    """Every image below root (headers checked now)."""
    if not os.path.isdir(root):
        raise DatasetError(f"Image folder {root} does not exist; set config.data.path to a folder of images.")
    relative = list_images(root)
    if not relative:
        raise DatasetError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) found in {root}; "
                           f"set config.data.path to a folder of images.")
    paths = tuple(os.path.join(root, r) for r in relative)
    check_images(paths)
    tops = [r.split(os.sep)[0] if os.sep in r else "" for r in relative]
    classes = {name: k for k, name in enumerate(sorted(set(tops)))}
    return FolderSource(paths, np.array([classes[t] for t in tops], np.int32), fmt)


def folder(config, split: str, fmt: ImageFormat) -> FolderSource:
    return folder_source(split_path(config, split), fmt)


# ----------------------------------------------------------------------------- arrays

def _checked_images(images: np.ndarray, path: str) -> np.ndarray:
    channels_ok = images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3, 4))
    if images.dtype != np.uint8 or not channels_ok:
        raise DatasetError(f"The images in {path} must be uint8 (N, H, W) or (N, H, W, C) with C in 1, 3, 4; "
                           f"got {images.dtype} {images.shape}.")
    return images if images.ndim == 4 else images[..., None]


def _labels(labels: np.ndarray | None, n: int, path: str) -> np.ndarray:
    if labels is None:
        return np.zeros(n, np.int32)
    if labels.shape != (n,):
        raise DatasetError(f"{path}: {n} images but labels of shape {labels.shape}.")
    return labels.astype(np.int32)


def npz(config, split: str, fmt: ImageFormat) -> ArraySource:
    """An .npz with 'image' (uint8 (N, H, W[, C])) and optionally 'label' (N,)."""
    path = split_path(config, split)
    hint = "save the images with np.savez(path, image=..., label=...)"
    try:
        f = np.load(path)
        if not isinstance(f, np.lib.npyio.NpzFile) or "image" not in f.files:
            raise ValueError(f"it holds no 'image' array; {hint}")
        with f:
            images, labels = f["image"], (f["label"] if "label" in f.files else None)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, ValueError) as e:
        raise DatasetError(f"Cannot read .npz file {path}: {e}.") from e
    images = _checked_images(images, path)
    return ArraySource(fmt.apply(images), _labels(labels, len(images), path))


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


def idx_pair(images_path: str, labels_path: str | None, fmt: ImageFormat) -> ArraySource:
    """IDX images (N, H, W) and, where labels_path is given, IDX labels (N,)."""
    images = _checked_images(read_idx(images_path), images_path)
    labels = read_idx(labels_path) if labels_path else None
    return ArraySource(fmt.apply(images), _labels(labels, len(images), labels_path or images_path))


def idx(config, split: str, fmt: ImageFormat) -> ArraySource:
    """config.data.path is an images file such as train-images-idx3-ubyte.gz; its labels are the file named
    with 'labels-idx1' in place of 'images-idx3', where it exists."""
    path = split_path(config, split)
    labels_path = path.replace("images-idx3", "labels-idx1")
    return idx_pair(path, labels_path if labels_path != path and os.path.exists(labels_path) else None, fmt)
