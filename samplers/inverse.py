"""Linear inverse problems with the PC sampler (Song et al. 2021, Appendix I): inpainting, colorization,
super-resolution, and any observation of some coordinates of an orthogonal change of basis.

An observation is u = M F_p(x) on the channel axis (F_p = sde_lib.fold_patches: each p x p patch folded
into channels, the identity at p = 1; M orthogonal, p p C x p p C; the identity for inpainting) of which the
coordinates where mask = 1 are known: mask * u = mask * M F_p(y) for a known image y. The PC sampler
(samplers/pc.py, option `constraint`) keeps the unknown coordinates on the reverse process and, after every
corrector and predictor update at time t, replaces the known ones by a sample of their forward marginal,

    mask * u_t = mask * (alpha(t) M y + sigma(t) z),   z ~ N(0, I),

so they follow the diffusion of the observation while the score fills in the rest. The returned x has
mask * M x = mask * M y exactly (a final replacement at t = 0), for every SDE.

This replacement is the score-SDE paper's method; it is not exact posterior sampling: for t > 0 the unknown
coordinates are driven by grad log p_t(x_unknown | x_known = alpha(t) y + noise), not by the score of
p_t(x_unknown | y). tests/test_inverse.py measures the difference on a Gaussian, where both are known.

    inpainting(known, mask)  - mask (H, W) or broadcastable to x: 1 where the pixel is known
    colorization(gray, C)    - M's first row is (1, ..., 1) / sqrt(C): the gray level mean_c x_c is known
    superresolution(y, k)    - p = k, M = kron(G, I_C) with G's first row (1, ..., 1) / k: its first C rows give
                               k times each k x k block's per-channel mean, u_c = (1/k) sum_{i,j} x_{ij c}, known
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from configs import ConfigError
from sde_lib import batch_mul, fold_patches, unfold_patches


@dataclasses.dataclass(frozen=True, eq=False)
class LinearObservation:
    """mask * (M F_p(x)) = mask * (M F_p(known)): known (B, ..., C) in the model's data space (images
    (B, H, W, C) when patch > 1); mask broadcastable to F_p(known)'s shape, in M's coordinates; matrix
    (p p C, p p C) orthogonal, or None for the identity; patch p folds p x p patches into channels first."""

    known: jax.Array
    mask: jax.Array
    matrix: np.ndarray | None = None
    patch: int = 1

    def __post_init__(self):
        known = jnp.asarray(self.known, jnp.float32)
        mask = jnp.asarray(self.mask, jnp.float32)
        folded = jax.eval_shape(lambda y: fold_patches(y, self.patch), known).shape
        try:
            jnp.broadcast_shapes(mask.shape, folded)
        except ValueError:
            raise ValueError(f"The mask of shape {mask.shape} does not broadcast to the images' shape "
                             f"{folded}; give an (H, W) or (H, W, C) mask of the images' size.") from None
        if self.matrix is not None:
            m, c = np.asarray(self.matrix, np.float64), folded[-1]
            if m.shape != (c, c) or not np.allclose(m @ m.T, np.eye(len(m)), atol=1e-6):
                raise ValueError(f"The observation matrix must be an orthogonal {c}x{c} matrix on the channel "
                                 f"axis, got shape {m.shape}.")
            object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "known", known)
        object.__setattr__(self, "mask", mask)

    def forward(self, x):
        """u = M F_p(x), M on the last (channel) axis."""
        x = fold_patches(x, self.patch)
        return x if self.matrix is None else jnp.einsum("cd,...d->...c", jnp.asarray(self.matrix, x.dtype), x)

    def inverse(self, u):
        """x = F_p^{-1}(M^T u)."""
        u = u if self.matrix is None else jnp.einsum("dc,...d->...c", jnp.asarray(self.matrix, u.dtype), u)
        return unfold_patches(u, self.patch)

    def replace(self, x, u_known):
        """x whose known coordinates (in M's basis) are set to u_known: M^T (mask u_known + (1 - mask) M x)."""
        return self.inverse(jnp.where(self.mask > 0, u_known, self.forward(x)))

    def marginal_sample(self, rng, x, alpha, sigma):
        """x with the known coordinates replaced by alpha M y + sigma z (rng None: by their mean alpha M y)."""
        u_known = batch_mul(alpha, self.forward(self.known))
        if rng is not None:
            u_known = u_known + batch_mul(sigma, jax.random.normal(rng, u_known.shape, x.dtype))
        return self.replace(x, u_known)

    def project(self, x):
        """x with the known coordinates set to M y exactly."""
        return self.replace(x, self.forward(self.known))


def inpainting(known, mask) -> LinearObservation:
    """Known pixels: mask 1 where known is observed, broadcastable to known's shape; for images
    (B, H, W, C) also an (H, W) mask (every channel of a pixel)."""
    mask = jnp.asarray(mask, jnp.float32)
    return LinearObservation(known, mask[..., None] if mask.ndim == 2 and jnp.ndim(known) == 4 else mask)


def gray_basis(num_channels: int) -> np.ndarray:
    """An orthogonal C x C matrix whose first row is (1, ..., 1) / sqrt(C) (for C = 3 the rows of score_sde's
    colorization matrix up to signs), from the QR decomposition of [1 | e_2 .. e_C]."""
    a = np.eye(num_channels)
    a[:, 0] = 1.0
    q, _ = np.linalg.qr(a)
    return (q * np.sign(q[0, 0])).T


def colorization(gray, num_channels: int = 3) -> LinearObservation:
    """Known gray level: gray (B, H, W) or (B, H, W, 1) in the model's data space, the channel mean of the answer."""
    if num_channels < 2:
        raise ConfigError("Colorization needs colour data: images with more than one channel "
                          "(config.data.num_channels > 1).")
    gray = jnp.asarray(gray, jnp.float32)
    gray = gray if gray.ndim == 4 else gray[..., None]
    if gray.shape[-1] != 1:
        raise ValueError(f"Colorization takes one gray channel, got images of shape {gray.shape}.")
    mask = jnp.zeros((num_channels,)).at[0].set(1.0)
    return LinearObservation(jnp.repeat(gray, num_channels, axis=-1), mask, gray_basis(num_channels))


def grayscale(x):
    """The gray level mean_c x_c of images (B, ..., C), keeping a channel axis of 1."""
    return jnp.mean(x, axis=-1, keepdims=True)


def superresolution(known, factor: int) -> LinearObservation:
    """Known k x k block means (k = factor) of images (B, H, W, C) in the model's data space: known is any image
    with those means, the high-resolution truth or its low-resolution copy repeated k times (nearest upsampling).
    In F_k's channels (i k + j) C + c, M = kron(gray_basis(k k), I_C) is orthogonal and its first C rows are
    u_c = (1/k) sum_{i,j} x_{ij c} = k mean_{ij} x_{ij c}: those are known, the k k C - C others are sampled."""
    known = jnp.asarray(known, jnp.float32)
    size = known.shape[1:3]
    if factor < 2 or any(n % factor for n in size):
        raise ConfigError(f"Super-resolution by a factor of {factor} needs an integer factor of at least 2 that "
                          f"divides the image size {size[0]}x{size[1]}.")
    channels = known.shape[-1]
    mask = jnp.zeros((factor * factor * channels,)).at[:channels].set(1.0)
    return LinearObservation(known, mask, np.kron(gray_basis(factor * factor), np.eye(channels)), patch=factor)
