"""NCSNv2 (Song & Ermon 2020, "Improved Techniques for Training Score-Based Generative Models").

A RefineNet: residual blocks with InstanceNorm++ (dilated rather than strided in the
deepest stages), then RefineNet blocks (residual conv units -> multi-resolution fusion
-> chained residual pooling) from the coarsest stage back up. The network is
noise-unconditional (the paper's technique 3): s(x, sigma) = net(x) / sigma, the
1/sigma being models.get_score_fn's with config.model.scale_by_sigma, so `time_cond`
is not read.

Class conditioning (config.model.num_classes > 0; not in the paper): with no time
embedding to add to, the shared label embedding (layers.add_label_embedding, nf
features, null label for classifier-free guidance) is added as a per-channel bias to
the first convolution's output, from where it reaches every later layer through the
residual paths and InstanceNorm++'s channel-mean term.

Convolutions use PyTorch's default initialisation, as the NCSNv2 reference does.
"""
from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from models import layers
from models import up_or_down_sampling as updown
from models.registry import register_model


def _uniform(bound: float):
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def ncsn_conv(x, out_ch: int, kernel: int = 3, dilation: int = 1, use_bias: bool = True):
    """'SAME' (dilated) convolution with PyTorch's default init: weights and bias ~ U(+-1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(kernel * kernel * x.shape[-1])
    return nn.Conv(out_ch, (kernel, kernel), padding="SAME", kernel_dilation=(dilation, dilation), use_bias=use_bias,
                   kernel_init=_uniform(bound), bias_init=_uniform(bound), dtype=x.dtype)(x)


class InstanceNormPlus(nn.Module):
    """InstanceNorm++ (Song & Ermon 2019), computed in float32: with mu_c, s_c the mean and std of
    channel c over the image, and m, v^2 the mean and (unbiased) variance of the mu_c over channels,

        out_c = gamma_c [(x_c - mu_c) / s_c + alpha_c (mu_c - m) / v] + beta_c,

    gamma, alpha ~ N(1, 0.02^2) and beta = 0 at init; eps 1e-5 under both square roots."""

    @nn.compact
    def __call__(self, x):
        C = x.shape[-1]
        h = x.astype(jnp.float32)
        mu = h.mean(axis=(1, 2), keepdims=True)
        h = (h - mu) / jnp.sqrt(h.var(axis=(1, 2), keepdims=True) + 1e-5)
        mu_plus = (mu - mu.mean(axis=-1, keepdims=True)) / jnp.sqrt(mu.var(axis=-1, keepdims=True, ddof=1) + 1e-5)
        near_one = lambda key, shape, dtype=jnp.float32: 1.0 + 0.02 * jax.random.normal(key, shape, dtype)
        gamma, alpha = self.param("gamma", near_one, (C,)), self.param("alpha", near_one, (C,))
        beta = self.param("beta", nn.initializers.zeros, (C,))
        return (gamma * (h + alpha * mu_plus) + beta).astype(x.dtype)


def _interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation with aligned corners: output i reads input i (n_in - 1) / (n_out - 1)."""
    pos = np.arange(n_out) * ((n_in - 1) / max(n_out - 1, 1))
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    A = np.zeros((n_out, n_in), np.float32)
    np.add.at(A, (np.arange(n_out), lo), 1.0 - (pos - lo))
    np.add.at(A, (np.arange(n_out), hi), pos - lo)
    return A


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bilinear resize of (B, H, W, C) to `size` with align_corners=True, as NCSNv2's fusion uses."""
    if x.shape[1:3] == tuple(size):
        return x
    Ah = jnp.asarray(_interpolation_matrix(x.shape[1], size[0]), x.dtype)
    Aw = jnp.asarray(_interpolation_matrix(x.shape[2], size[1]), x.dtype)
    return jnp.einsum("oh,bhwc,pw->bopc", Ah, x, Aw)


class ResidualBlock(nn.Module):
    """out = shortcut(x) + conv(act(IN++(conv(act(IN++(x)))))).

    down with dilation 1: the second conv and the 1x1 shortcut are followed by 2x2 mean
    pooling. With dilation > 1 the block keeps the resolution ('down' then only means the
    first conv keeps the input width), RefineNet's dilated deep stages."""

    out_ch: int
    act: callable
    down: bool = False
    dilation: int = 1

    @nn.compact
    def __call__(self, x):
        C, d = x.shape[-1], self.dilation
        h = ncsn_conv(self.act(InstanceNormPlus()(x)), C if self.down else self.out_ch, dilation=d)
        h = self.act(InstanceNormPlus()(h))
        if self.down and d == 1:
            h = updown.naive_downsample_2d(ncsn_conv(h, self.out_ch))
            return updown.naive_downsample_2d(ncsn_conv(x, self.out_ch, kernel=1)) + h
        h = ncsn_conv(h, self.out_ch, dilation=d)
        if self.down or C != self.out_ch:
            x = ncsn_conv(x, self.out_ch, kernel=3 if d > 1 else 1, dilation=d)
        return x + h


def residual_conv_units(x, act, n_blocks: int, n_stages: int = 2):
    """RCU: n_blocks times  x <- x + (act -> conv3x3 without bias)^n_stages (x)."""
    for _ in range(n_blocks):
        h = x
        for _ in range(n_stages):
            h = ncsn_conv(act(h), x.shape[-1], use_bias=False)
        x = x + h
    return x


def chained_residual_pooling(x, act, n_stages: int = 2):
    """CRP: x <- act(x); then n_stages times  p <- conv3x3(maxpool5x5(p)), x <- x + p  (p starts at x)."""
    x = path = act(x)
    for _ in range(n_stages):
        pooled = nn.max_pool(path, (5, 5), strides=(1, 1), padding=((2, 2), (2, 2)))
        path = ncsn_conv(pooled, x.shape[-1], use_bias=False)
        x = x + path
    return x


class RefineBlock(nn.Module):
    """RefineNet block: RCU(2) on each input -> fusion sum_i resize(conv3x3(h_i)) to the first input's
    size (when there are several) -> CRP -> RCU (3 blocks in the last RefineBlock, else 1)."""

    features: int
    act: callable
    end: bool = False

    @nn.compact
    def __call__(self, xs):
        hs = [residual_conv_units(x, self.act, n_blocks=2) for x in xs]
        size = hs[0].shape[1:3]
        h = sum(resize_bilinear(ncsn_conv(h, self.features), size) for h in hs) if len(hs) > 1 else hs[0]
        return residual_conv_units(chained_residual_pooling(h, self.act), self.act, n_blocks=3 if self.end else 1)


@register_model("ncsnv2_64")
class NCSNv2(nn.Module):
    """NCSNv2 for images up to 64px, model(x, time_cond, labels=None, train=False) -> (B, H, W, C) float32."""

    config: ml_collections.ConfigDict
    #: (channel multiplier of nf, dilation) of each stage of two residual blocks; every stage after the
    #: first starts with a 'down' block.
    STAGES: ClassVar[tuple] = ((1, 1), (2, 1), (2, 2), (2, 4))

    @nn.compact
    def __call__(self, x, time_cond, labels=None, train: bool = False):
        m = self.config.model
        layers.choice(self.config, "normalization", ("instancenorm++",))
        layers.choice(self.config, "interpolation", ("bilinear",))
        act = layers.get_act(self.config)
        dtype = layers.compute_dtype(self.config)
        nf = m.nf

        h = ncsn_conv((x if self.config.data.centered else 2.0 * x - 1.0).astype(dtype), nf)
        label_bias = layers.add_label_embedding(None, labels, m.num_classes, nf, x.shape[0], dtype)
        if label_bias is not None:
            h = h + label_bias[:, None, None, :]

        stages = []
        for i, (mult, dilation) in enumerate(self.STAGES):
            h = ResidualBlock(mult * nf, act, down=i > 0, dilation=dilation)(h)
            h = ResidualBlock(mult * nf, act, dilation=dilation)(h)
            stages.append(h)

        h = None
        for i in reversed(range(len(stages))):
            features = nf * self.STAGES[max(i - 1, 0)][0]
            h = RefineBlock(features, act, end=i == 0)([stages[i]] if h is None else [stages[i], h])

        h = ncsn_conv(act(InstanceNormPlus()(h)), x.shape[-1])
        return h.astype(jnp.float32)


@register_model("ncsnv2_128")
class NCSNv2_128(NCSNv2):
    """NCSNv2 for 96-128px images: one more stage, widths up to 4 nf."""

    STAGES: ClassVar[tuple] = ((1, 1), (2, 1), (2, 1), (4, 2), (4, 4))


@register_model("ncsnv2_256")
class NCSNv2_256(NCSNv2):
    """NCSNv2 for 129-256px images."""

    STAGES: ClassVar[tuple] = ((1, 1), (2, 1), (2, 1), (2, 1), (4, 2), (4, 4))
