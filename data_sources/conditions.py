"""Condition images for a ControlNet, computed from the data on the fly (pure numpy / scikit-image), and the
edge-agreement metric that says whether samples follow them.

Kinds (`KINDS`), each a map from images x in [0, 1]^(N, H, W, C) to conditions c in {0, 1}^(N, H, W, 1):

    canny     c = Canny(gray(x); sigma, low, high)            gray = channel mean; hysteresis thresholds
                                                              relative to the [0, 1] range
    scribble  c = D_r(Canny(gray(x)))                         D_r: binary dilation by a (2r + 1)^2 square,
                                                              a thick, hand-drawn-like stroke
    mask      c = [gray(x) > threshold]                       the foreground

and 'folder': user-given condition images, one per data file, paired by file name (`paired_conditions`).

Concat conditions (`CONCAT_KINDS`: latent diffusion's 'concat' conditioning, images the denoiser takes as extra
input channels), each a map from x in [0, 1]^(N, H, W, C) to c in [0, 1]^(N, H, W, C_c):

    lowres      c = U_k(A_k(x))                 A_k: the mean of each k x k block (area downsampling by k);
                                                U_k: back to H x W, nearest (each block constant) or bilinear
                                                (half-pixel centres, edges clamped); C_c = C (super-resolution)
    inpaint     c = [x (1 - m), m]              m in {0, 1}^(H, W, 1), 1 where unknown: a random box or brush
                                                stroke drawn from the generator seeded (seed, index), so the
                                                mask of an example is a pure function of its index; C_c = C + 1
                                                (outpainting: x placed on a larger canvas, m = 1 outside it)
    foreground  c = [gray(x) > threshold]       the 'mask' kind's map (semantic map of two classes); C_c = 1

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
CONCAT_KINDS = ("lowres", "inpaint", "foreground")
UPSAMPLING = ("nearest", "bilinear")


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


def concat_channels(kind: str, channels: int) -> int:
    """C_c of a concat condition of `kind` for images of `channels` channels."""
    return {"lowres": channels, "inpaint": channels + 1, "foreground": 1}[kind]


def area_downsample(images, factor: int):
    """A_k: (N, H, W, C) -> (N, H / k, W / k, C), the mean of each k x k block (numpy or jax arrays)."""
    n, h, w, c = images.shape
    return images.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def _linear_weights(size: int, factor: int) -> np.ndarray:
    """(size k, size) bilinear interpolation matrix: output pixel i samples input coordinate (i + 1/2) / k - 1/2,
    clamped to the edge pixels' centres."""
    pos = np.clip((np.arange(size * factor) + 0.5) / factor - 0.5, 0, size - 1)
    low = np.minimum(np.floor(pos).astype(int), size - 2) if size > 1 else np.zeros(len(pos), int)
    frac = pos - low
    weights = np.zeros((size * factor, size), np.float32)
    np.add.at(weights, (np.arange(len(pos)), low), 1 - frac)
    np.add.at(weights, (np.arange(len(pos)), np.minimum(low + 1, size - 1)), frac)
    return weights


def lowres(images: np.ndarray, factor: int, upsample: str = "nearest") -> np.ndarray:
    """U_k(A_k(x)): the images at 1/k of their resolution, shown at full size (module docstring)."""
    small = area_downsample(np.asarray(images, np.float32), factor)
    if upsample == "nearest":
        return small.repeat(factor, axis=1).repeat(factor, axis=2)
    rows, cols = _linear_weights(small.shape[1], factor), _linear_weights(small.shape[2], factor)
    return np.einsum("ph,nhwc,qw->npqc", rows, small, cols).astype(np.float32)


def inpaint_mask(size: int, seed: int, index: int) -> np.ndarray:
    """m (size, size, 1) in {0, 1}, 1 where unknown: with probability 1/2 a box of sides in [size/4, 3 size/4],
    else a brush stroke of 2..4 straight segments, 2r + 1 pixels thick, r in 0..max(1, size / 16); drawn from
    (seed, index) alone."""
    rng = np.random.default_rng([seed, index, 7])
    m = np.zeros((size, size), np.float32)
    if rng.random() < 0.5:
        h, w = rng.integers(max(1, size // 4), max(2, 3 * size // 4 + 1), 2)
        top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        m[top:top + h, left:left + w] = 1
        return m[..., None]
    radius = int(rng.integers(0, max(1, size // 16) + 1))
    point = rng.uniform(0, size - 1, 2)
    for _ in range(rng.integers(2, 5)):
        angle = rng.uniform(0, 2 * np.pi)
        end = np.clip(point + rng.uniform(size / 4, size / 2) * np.array([np.sin(angle), np.cos(angle)]), 0, size - 1)
        for y, x in np.linspace(point, end, 2 * size).round().astype(int):
            m[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1] = 1
        point = end
    return m[..., None]


def masked(images: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The inpaint condition [x (1 - m), m] (N, H, W, C + 1) of images x and masks m ((N, )H, W, 1), 1 = unknown."""
    images = np.asarray(images, np.float32)
    m = np.broadcast_to(np.asarray(m, np.float32), images.shape[:-1] + (1,))
    return np.concatenate([images * (1 - m), m], axis=-1)


def inpaint(images: np.ndarray, indices, seed: int) -> np.ndarray:
    """[x (1 - m), m] (N, H, W, C + 1), m = inpaint_mask of each example's (seed, index)."""
    return masked(images, np.stack([inpaint_mask(np.shape(images)[1], seed, int(i)) for i in indices]))


def place(images: np.ndarray, canvas: int, top: int, left: int) -> tuple[np.ndarray, np.ndarray]:
    """Outpainting's canvas: (the images (N, s, s, C) at rows top..top + s - 1, columns left..left + s - 1 of a
    zero canvas (N, S, S, C), S = canvas; the known mask (S, S), 1 inside the images' extent). The region to fill
    is 1 - known, everything outside the input."""
    images = np.asarray(images)
    n, size, _, c = images.shape
    out = np.zeros((n, canvas, canvas, c), images.dtype)
    out[:, top:top + size, left:left + size] = images
    known = np.zeros((canvas, canvas), np.float32)
    known[top:top + size, left:left + size] = 1
    return out, known


def compute_concat(kind: str, images: np.ndarray, indices, *, seed: int = 0, factor: int = 4,
                   upsample: str = "nearest", threshold: float = 0.5) -> np.ndarray:
    """The concat condition of `kind` (CONCAT_KINDS) of images in [0, 1] with dataset indices `indices`."""
    if kind == "lowres":
        return lowres(images, factor, upsample)
    if kind == "inpaint":
        return inpaint(images, indices, seed)
    if kind == "foreground":
        return threshold_mask(images, threshold)
    raise ValueError(f"Unknown concat condition {kind!r}; choose one of {list(CONCAT_KINDS)}.")


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
