"""2x up/down-sampling of NHWC images with FIR filters (StyleGAN2's upfirdn2d), as NCSN++ uses them.

Everything is written on one primitive,

    upfirdn2d(x, k, up, down, (p0, p1)) = downsample_down( pad_(p0, p1)( zero_upsample_up(x) ) * k ),

on both spatial axes: insert up-1 zeros after every pixel, zero-pad p0 pixels
before and p1 after (negative values crop), take the true 2-D convolution with
the FIR kernel k, and keep every `down`-th pixel. A 1-D kernel [1, 3, 3, 1]
means its outer product; kernels are normalised to sum to 1 (times
gain = factor^2 when upsampling), so a constant image stays constant away from
the borders, where the zero padding shows.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def fir_kernel_2d(k, gain: float = 1.0) -> np.ndarray:
    """The (n, n) FIR kernel gain * K / sum(K), K = outer(k, k) for a 1-D k, else k."""
    k = np.asarray(k, dtype=np.float32)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"A FIR kernel must be 1-D or square 2-D, got shape {k.shape}.")
    return k * (gain / k.sum())


def upfirdn2d(x: jax.Array, k: np.ndarray, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> jax.Array:
    """Upsample by zero insertion, pad, convolve with the 2-D FIR kernel k (per channel), downsample."""
    p0, p1 = pad
    # Interior padding inserts up-1 zeros between pixels; up-1 more after the last one.
    spatial = (p0, p1 + up - 1, up - 1)
    x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), spatial, spatial, (0, 0, 0)])
    C = x.shape[-1]
    w = jnp.broadcast_to(jnp.asarray(k[::-1, ::-1], x.dtype)[:, :, None, None], k.shape + (1, C))
    return lax.conv_general_dilated(x, w, (down, down), "VALID", dimension_numbers=_NHWC, feature_group_count=C)


def upsample_2d(x: jax.Array, k=(1, 3, 3, 1), factor: int = 2) -> jax.Array:
    """(B, H, W, C) -> (B, factor H, factor W, C), FIR interpolation with kernel k."""
    k = fir_kernel_2d(k, gain=factor**2)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: jax.Array, k=(1, 3, 3, 1), factor: int = 2) -> jax.Array:
    """(B, H, W, C) -> (B, H / factor, W / factor, C), FIR anti-aliasing with kernel k."""
    k = fir_kernel_2d(k)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x: jax.Array, w: jax.Array, k=(1, 3, 3, 1), factor: int = 2) -> jax.Array:
    """Fused upsample_2d then convolution with w (kh, kw, in, out): a stride-`factor` transposed
    convolution followed by the FIR filter, padded once (StyleGAN2's upsample_conv_2d)."""
    kc = w.shape[0]
    x = lax.conv_general_dilated(x, w, (1, 1), [(kc - 1, kc - 1)] * 2, lhs_dilation=(factor, factor),
                                 dimension_numbers=_NHWC)
    k = fir_kernel_2d(k, gain=factor**2)
    p = (k.shape[0] - factor) - (kc - 1)
    return upfirdn2d(x, k, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: jax.Array, w: jax.Array, k=(1, 3, 3, 1), factor: int = 2) -> jax.Array:
    """Fused FIR filter then stride-`factor` convolution with w (kh, kw, in, out), padded once."""
    k = fir_kernel_2d(k)
    p = (k.shape[0] - factor) + (w.shape[0] - 1)
    x = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
    return lax.conv_general_dilated(x, w, (factor, factor), "VALID", dimension_numbers=_NHWC)


def naive_upsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
    """Nearest-neighbour upsampling: each pixel repeated factor x factor times."""
    B, H, W, C = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (B, H, factor, W, factor, C))
    return x.reshape(B, H * factor, W * factor, C)


def naive_downsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
    """Average pooling over non-overlapping factor x factor windows."""
    B, H, W, C = x.shape
    return x.reshape(B, H // factor, factor, W // factor, factor, C).mean(axis=(2, 4))


def upsample(x: jax.Array, fir: bool, fir_kernel=(1, 3, 3, 1)) -> jax.Array:
    """2x upsampling: FIR (fir=True) or nearest neighbour."""
    return upsample_2d(x, fir_kernel) if fir else naive_upsample_2d(x)


def downsample(x: jax.Array, fir: bool, fir_kernel=(1, 3, 3, 1)) -> jax.Array:
    """2x downsampling: FIR (fir=True) or 2x2 average pooling."""
    return downsample_2d(x, fir_kernel) if fir else naive_downsample_2d(x)
