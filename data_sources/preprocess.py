"""Image geometry: the one place where raw images become uint8 (size, size, channels).

score_sde's recipe: an optional centre crop (CelebA: 140x140), then a resize
of the short side to `size` and a centre crop of the long side, so that
non-square images (LSUN, a user's photos) keep their aspect ratio; square
images are simply resized. Resizing is bicubic (antialiased when shrinking).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from data_sources.base import DatasetError


def _centre_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
    return image[top:top + height, left:left + width]


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (..., c) -> (..., channels): gray -> RGB by repetition, RGB -> gray by ITU-R 601 luma, RGBA -> RGB."""
    if images.shape[-1] == 4:
        images = images[..., :3]
    if images.shape[-1] == channels:
        return images
    if images.shape[-1] == 1 and channels == 3:
        return np.repeat(images, 3, axis=-1)
    if images.shape[-1] == 3 and channels == 1:
        luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.round(luma).clip(0, 255).astype(np.uint8)[..., None]
    raise DatasetError(f"Cannot convert {images.shape[-1]}-channel images to config.data.num_channels={channels}.")


@dataclasses.dataclass(frozen=True)
class ImageFormat:
    """The target geometry: image (h, w[, c]) uint8 -> (size, size, channels) uint8."""

    size: int
    channels: int
    crop: int = 0  # centre crop to crop x crop pixels first (0: none)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        if image.ndim == 2:
            image = image[..., None]
        if self.crop:
            image = _centre_crop(image, min(self.crop, image.shape[0]), min(self.crop, image.shape[1]))
        h, w = image.shape[:2]
        if (h, w) != (self.size, self.size):
            scale = self.size / min(h, w)
            new_h, new_w = max(self.size, round(h * scale)), max(self.size, round(w * scale))
            pil = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
            image = np.asarray(pil.resize((new_w, new_h), Image.BICUBIC)).reshape(new_h, new_w, -1)
            image = _centre_crop(image, self.size, self.size)
        return convert_channels(image, self.channels)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """The same for a stack of equally sized images (N, h, w, c)."""
        if images.shape[1:3] == (self.size, self.size) and not self.crop:
            return convert_channels(images, self.channels)
        if not len(images):
            return np.zeros((0, self.size, self.size, self.channels), np.uint8)
        return np.stack([self(im) for im in images])


def resize_images(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 (N, h, w, c) -> uint8 (N, size, size, channels) (see ImageFormat)."""
    return ImageFormat(size, channels).apply(images)
