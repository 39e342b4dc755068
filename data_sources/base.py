"""What every data source is: a random-access sequence of (uint8 image, int label) examples."""
from __future__ import annotations

import dataclasses
from typing import Protocol

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
