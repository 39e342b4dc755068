"""Inception-v3 of the standard FID implementations, in Flax linen.

This is the network of pytorch-fid (FID Inception, ported from TF's 2015-12-05 graph,
weights pt_inception-2015-12-05-6726825d.pth; see evaluation/fid_weights.py), which differs from
torchvision's Inception-v3 in three ways the FID numbers depend on:
  * the avg-pool branch of Mixed_5b..d, 6b..e and 7b excludes the zero padding from the
    mean (count_include_pad=False, as TF's avg_pool does);
  * Mixed_7c pools its branch_pool input with a 3x3 max-pool instead of an avg-pool;
  * the classifier has 1008 outputs.
Every conv is followed by BatchNorm (eps = 1e-3, running statistics) and ReLU.

Module and parameter names mirror the PyTorch module tree (Mixed_5b/branch1x1/conv/kernel
for Mixed_5b.branch1x1.conv.weight), so the weight mapping is one rule per leaf.

Usage:
    variables = evaluation.fid_weights.load_fid_inception_params(config.eval.inception_path)
    out = FIDInceptionV3().apply(variables, images)   # images (B, H, W, 3) in [0, 1]
    out['pool3']                                      # (B, 2048) FID / KID features
    out['logits_unbiased']                            # (B, 1008) for the Inception Score
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INPUT_SIZE = 299
NUM_CLASSES = 1008
_HIGHEST = jax.lax.Precision.HIGHEST


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) matrix W of 1-D bilinear resizing, y = W x, with the half-pixel
    convention of torch F.interpolate(mode='bilinear', align_corners=False), no antialiasing:

        s_o = max((o + 1/2) * in_size / out_size - 1/2, 0)
        i0 = floor(s_o),  i1 = min(i0 + 1, in_size - 1),  lambda = s_o - i0
        y_o = (1 - lambda) x_{i0} + lambda x_{i1}

    s_o and lambda are computed in float32, as torch's CPU kernel does for float32 images
    (in float64 a 512 -> 299 resize would differ from torch by up to 3e-5).
    """
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    src = np.maximum(scale * (np.arange(out_size, dtype=f32) + f32(0.5)) - f32(0.5), f32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam = src - i0.astype(f32)
    w = np.zeros((out_size, in_size), f32)
    rows = np.arange(out_size)
    np.add.at(w, (rows, i0), f32(1) - lam)
    np.add.at(w, (rows, i1), lam)
    return w


def resize_bilinear(images: jax.Array, height: int, width: int) -> jax.Array:
    """Resizes (B, H, W, C) images to (B, height, width, C) like torch's
    F.interpolate(x, (height, width), mode='bilinear', align_corners=False): the separable
    product Y = W_h X W_w^T with the matrices of bilinear_matrix.
    """
    _, h, w, _ = images.shape
    w_h = jnp.asarray(bilinear_matrix(h, height), images.dtype)
    w_w = jnp.asarray(bilinear_matrix(w, width), images.dtype)
    x = jnp.einsum('oh,bhwc->bowc', w_h, images, precision=_HIGHEST)
    return jnp.einsum('pw,bowc->bopc', w_w, x, precision=_HIGHEST)


class BasicConv(nn.Module):
    """relu(BN(conv(x))): bias-free conv with symmetric zero padding (ph, pw), then
    BatchNorm with running statistics, y = (x - mean) / sqrt(var + 1e-3) * scale + bias."""
    features: int
    kernel: tuple[int, int]
    strides: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x):
        ph, pw = self.padding
        x = nn.Conv(self.features, self.kernel, strides=self.strides,
                    padding=((ph, ph), (pw, pw)), use_bias=False, precision=_HIGHEST,
                    name='conv')(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name='bn')(x)
        return nn.relu(x)


def _avg_pool_3x3(x):
    """3x3 stride-1 mean over the in-image neighbours only (count_include_pad=False)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                       count_include_pad=False)


def _max_pool_3x3_stride2(x):
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avgpool->1x1 (Mixed_5b..d)."""
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(64, (1, 1), name='branch1x1')(x)
        b5 = BasicConv(48, (1, 1), name='branch5x5_1')(x)
        b5 = BasicConv(64, (5, 5), padding=(2, 2), name='branch5x5_2')(b5)
        b3 = BasicConv(64, (1, 1), name='branch3x3dbl_1')(x)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b3)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(b3)
        bp = BasicConv(self.pool_features, (1, 1), name='branch_pool')(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction: 3x3/2 | 1x1->3x3->3x3/2 | maxpool/2 (Mixed_6a)."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(384, (3, 3), strides=2, name='branch3x3')(x)
        bd = BasicConv(64, (1, 1), name='branch3x3dbl_1')(x)
        bd = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
        bd = BasicConv(96, (3, 3), strides=2, name='branch3x3dbl_3')(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convs, c7 inner channels (Mixed_6b..e)."""
    c7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.c7
        b1 = BasicConv(192, (1, 1), name='branch1x1')(x)
        b7 = BasicConv(c7, (1, 1), name='branch7x7_1')(x)
        b7 = BasicConv(c7, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
        bd = BasicConv(c7, (1, 1), name='branch7x7dbl_1')(x)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
        bd = BasicConv(c7, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
        bd = BasicConv(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)
        bp = BasicConv(192, (1, 1), name='branch_pool')(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction: 1x1->3x3/2 | 1x1->1x7->7x1->3x3/2 | maxpool/2 (Mixed_7a)."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(192, (1, 1), name='branch3x3_1')(x)
        b3 = BasicConv(320, (3, 3), strides=2, name='branch3x3_2')(b3)
        b7 = BasicConv(192, (1, 1), name='branch7x7x3_1')(x)
        b7 = BasicConv(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
        b7 = BasicConv(192, (3, 3), strides=2, name='branch7x7x3_4')(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 outputs (Mixed_7b: avg-pool branch; Mixed_7c: the FID
    graph's 3x3 stride-1 max-pool, padded with -inf)."""
    max_pool: bool

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(320, (1, 1), name='branch1x1')(x)
        b3 = BasicConv(384, (1, 1), name='branch3x3_1')(x)
        b3 = jnp.concatenate([
            BasicConv(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
            BasicConv(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3)], axis=-1)
        bd = BasicConv(448, (1, 1), name='branch3x3dbl_1')(x)
        bd = BasicConv(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
        bd = jnp.concatenate([
            BasicConv(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd),
            BasicConv(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd)], axis=-1)
        if self.max_pool:
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        else:
            pooled = _avg_pool_3x3(x)
        bp = BasicConv(192, (1, 1), name='branch_pool')(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """images (B, H, W, 3) in [0, 1], any H, W ->
    {'pool3': (B, 2048), 'logits': (B, 1008), 'logits_unbiased': (B, 1008)}.

    x = 2 * resize_bilinear(images, 299, 299) - 1; pool3 is the spatial mean of Mixed_7c;
    logits = pool3 W + b is the fc layer; logits_unbiased = pool3 W omits b, as the original
    TF Inception Score code (and torch-fidelity's IS) does.
    """

    @nn.compact
    def __call__(self, images) -> dict[str, jax.Array]:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                'FIDInceptionV3 takes RGB images (B, H, W, 3) in [0, 1], '
                f'got shape {images.shape}.')
        x = jnp.asarray(images, jnp.float32)
        x = 2.0 * resize_bilinear(x, INPUT_SIZE, INPUT_SIZE) - 1.0
        x = BasicConv(32, (3, 3), strides=2, name='Conv2d_1a_3x3')(x)          # 149x149
        x = BasicConv(32, (3, 3), name='Conv2d_2a_3x3')(x)                     # 147x147
        x = BasicConv(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x)
        x = _max_pool_3x3_stride2(x)                                          # 73x73
        x = BasicConv(80, (1, 1), name='Conv2d_3b_1x1')(x)
        x = BasicConv(192, (3, 3), name='Conv2d_4a_3x3')(x)                    # 71x71
        x = _max_pool_3x3_stride2(x)                                          # 35x35
        x = InceptionA(32, name='Mixed_5b')(x)
        x = InceptionA(64, name='Mixed_5c')(x)
        x = InceptionA(64, name='Mixed_5d')(x)
        x = InceptionB(name='Mixed_6a')(x)                                    # 17x17
        x = InceptionC(128, name='Mixed_6b')(x)
        x = InceptionC(160, name='Mixed_6c')(x)
        x = InceptionC(160, name='Mixed_6d')(x)
        x = InceptionC(192, name='Mixed_6e')(x)
        x = InceptionD(name='Mixed_7a')(x)                                    # 8x8
        x = InceptionE(max_pool=False, name='Mixed_7b')(x)
        x = InceptionE(max_pool=True, name='Mixed_7c')(x)
        pool3 = jnp.mean(x, axis=(1, 2))
        unbiased, logits = _Linear(NUM_CLASSES, name='fc')(pool3)
        return {'pool3': pool3, 'logits': logits, 'logits_unbiased': unbiased}


class _Linear(nn.Module):
    """(x W, x W + b) with kernel W (D, K) and bias b (K,), like nn.Dense."""
    features: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param('kernel', nn.initializers.lecun_normal(),
                            (x.shape[-1], self.features))
        bias = self.param('bias', nn.initializers.zeros, (self.features,))
        y = jnp.dot(x, kernel, precision=_HIGHEST)
        return y, y + bias


def abstract_variables() -> Any:
    """ShapeDtypeStructs of FIDInceptionV3's variables {'params', 'batch_stats'} (no compute)."""
    images = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    return jax.eval_shape(FIDInceptionV3().init, jax.random.key(0), images)
