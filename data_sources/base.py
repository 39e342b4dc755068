"""What every data source is: a random-access sequence of (uint8 image, int label) examples."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
from typing import Callable, Iterable, Protocol

import numpy as np


class DatasetError(ValueError):
    """A dataset is unknown, missing or unreadable."""


class Source(Protocol):
    """One split, already at the configured geometry. Readers may decode lazily (files) or index arrays."""

    def __len__(self) -> int:
        ...

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (n, H, W, C) and int32 labels (n,) of the examples at `indices`."""
        ...


@dataclasses.dataclass(frozen=True)
class ArraySource:
    """A split held in memory."""

    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int32 (N,)

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise DatasetError(f"{len(self.images)} images but {len(self.labels)} labels.")

    def __len__(self) -> int:
        return len(self.images)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.images[indices], self.labels[indices]


@functools.lru_cache(maxsize=1)
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=min(32, os.cpu_count() or 1))


def parallel_map(fn: Callable, items: Iterable) -> list:
    """[fn(item) for item in items], in order, on a thread pool (PIL decoding and resizing release the GIL)."""
    return list(_pool().map(fn, items))


def stack_images(images: list, fmt) -> np.ndarray:
    """The images as one uint8 array; (0, size, size, channels) when there are none."""
    return np.stack(images) if images else np.zeros((0, fmt.size, fmt.size, fmt.channels), np.uint8)
