"""Condition images for a ControlNet, computed from the data on the fly (pure numpy / scikit-image), and the
edge-agreement metric that says whether samples follow them.

Kinds (`KINDS`), each a map from images x in [0, 1]^(N, H, W, C) to conditions c in {0, 1}^(N, H, W, 1):

    canny     c = Canny(gray(x); sigma, low, high)            gray = channel mean; hysteresis thresholds
                                                              relative to the [0, 1] range
    scribble  c = D_r(Canny(gray(x)))                         D_r: binary dilation by a (2r + 1)^2 square,
                                                              a thick, hand-drawn-like stroke
    mask      c = [gray(x) > threshold]                       the foreground

and 'folder': user-given condition images, one per data file, paired by file name (`paired_conditions`).

Edge agreement of predicted edges P with reference edges R at a tolerance of r pixels:

    precision = |P ∩ D_r(R)| / |P|,   recall = |R ∩ D_r(P)| / |R|,   F1 = 2 precision recall / (precision + recall)

(1 when both maps are empty, 0 when exactly one is).
"""
from __future__ import annotations

import os

import numpy as np

from data_sources.base import DatasetError
from data_sources.local import decode_image, list_images
from data_sources.preprocess import ImageFormat

KINDS = ("canny", "scribble", "mask", "folder")


def gray(images: np.ndarray) -> np.ndarray:
    """(N, H, W) channel means of (N, H, W, C) images."""
    return np.asarray(images, np.float32).mean(axis=-1)


def canny(images: np.ndarray, sigma: float = 0.5, low: float = 0.1, high: float = 0.2) -> np.ndarray:
    """Canny edges of each image, (N, H, W, 1) float32 in {0, 1} (skimage.feature.canny on the gray level)."""
    from skimage.feature import canny as skimage_canny

    return np.stack([skimage_canny(g, sigma=sigma, low_threshold=low, high_threshold=high)
                     for g in gray(images)])[..., None].astype(np.float32)


def dilate(maps: np.ndarray, radius: int = 1) -> np.ndarray:
    """Binary dilation of (N, H, W[, 1]) maps by a (2 radius + 1)^2 square: 1 wherever a nonzero pixel lies
    within `radius` pixels in the max norm."""
    on = np.asarray(maps) > 0
    h, w = on.shape[1:3]
    padded = np.pad(on, [(0, 0), (radius, radius), (radius, radius)] + [(0, 0)] * (on.ndim - 3))
    out = np.zeros_like(on)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[:, dy:dy + h, dx:dx + w]
    return out.astype(np.float32)


def scribble(images: np.ndarray, sigma: float = 0.5, radius: int = 1) -> np.ndarray:
    """Thickened Canny edges, (N, H, W, 1) in {0, 1}."""
    return dilate(canny(images, sigma), radius)


def threshold_mask(images: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The foreground gray(x) > threshold, (N, H, W, 1) in {0, 1}."""
    return (gray(images) > threshold)[..., None].astype(np.float32)


def compute(kind: str, images: np.ndarray, sigma: float = 0.5, radius: int = 1, threshold: float = 0.5):
    """The condition of `kind` ('canny' | 'scribble' | 'mask') of images in [0, 1]."""
    if kind == "canny":
        return canny(images, sigma)
    if kind == "scribble":
        return scribble(images, sigma, radius)
    if kind == "mask":
        return threshold_mask(images, threshold)
    raise ValueError(f"Conditions of kind {kind!r} are not computed from images; computed kinds: "
                     f"{[k for k in KINDS if k != 'folder']}.")


def paired_conditions(folder: str, paths, fmt: ImageFormat) -> np.ndarray:
    """uint8 (N, H, W, C) condition images from `folder`, one per data file in `paths`, paired by file name
    without extension (digit_7.png <-> digit_7.jpg); DatasetError naming the first data file without one."""
    if not os.path.isdir(folder):
        raise DatasetError(f"The condition folder {folder} does not exist.")
    by_stem = {os.path.splitext(os.path.basename(p))[0]: os.path.join(folder, p) for p in list_images(folder)}
    out = []
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem not in by_stem:
            raise DatasetError(f"No condition image named {stem}.* in {folder} for the data file {path}; every "
                               f"data image needs one of the same name.")
        out.append(decode_image(by_stem[stem], fmt))
    return np.stack(out)


def edge_f1(predicted: np.ndarray, reference: np.ndarray, tolerance: int = 1) -> np.ndarray:
    """(N,) F1 of predicted vs reference edge maps (N, H, W[, 1]), matching within `tolerance` pixels."""
    p, r = np.asarray(predicted) > 0, np.asarray(reference) > 0
    axes = tuple(range(1, p.ndim))
    n_p, n_r = p.sum(axes), r.sum(axes)
    precision = (p & (dilate(r, tolerance) > 0)).sum(axes) / np.maximum(n_p, 1)
    recall = (r & (dilate(p, tolerance) > 0)).sum(axes) / np.maximum(n_r, 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return np.where((n_p == 0) & (n_r == 0), 1.0, f1)
