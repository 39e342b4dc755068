"""Layers shared by the U-Net score networks (DDPM, and the NCSN++/DDPM++ family).

Parameter shapes and initialisers follow the DDPM reference implementation
(Ho et al. 2020) as carried into score_sde: variance-scaling "fan_avg" uniform
initialisation with a per-layer scale, zero-initialised output layers, and
GroupNorm with min(C // 4, 32) groups.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def default_init(scale: float = 1.0):
    """DDPM initialiser: variance scaling (fan_avg, uniform) with the given scale (0 -> 1e-10)."""
    return nn.initializers.variance_scaling(1e-10 if scale == 0 else scale, "fan_avg", "uniform")


ACTIVATIONS = {"swish": nn.swish, "silu": nn.swish, "relu": nn.relu, "elu": nn.elu, "lrelu": lambda x: nn.leaky_relu(x, 0.2)}


def get_act(config):
    """The nonlinearity named by config.model.nonlinearity."""
    name = config.model.nonlinearity.lower()
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown config.model.nonlinearity {name!r}; choose one of {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def group_norm(x: jax.Array) -> jax.Array:
    """GroupNorm with min(C // 4, 32) groups (a fresh parameterised layer at each call site)."""
    return nn.GroupNorm(num_groups=min(x.shape[-1] // 4, 32))(x)


def conv3x3(x, out_ch: int, stride: int = 1, init_scale: float = 1.0, use_bias: bool = True):
    return nn.Conv(out_ch, (3, 3), strides=(stride, stride), padding="SAME", use_bias=use_bias,
                   kernel_init=default_init(init_scale))(x)


def conv1x1(x, out_ch: int, init_scale: float = 1.0, use_bias: bool = True):
    return nn.Conv(out_ch, (1, 1), padding="SAME", use_bias=use_bias, kernel_init=default_init(init_scale))(x)


class NIN(nn.Module):
    """Network-in-network: a per-pixel linear map of channels, y = x W + b."""

    num_units: int
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.num_units, kernel_init=default_init(self.init_scale))(x)


def timestep_embedding(timesteps: jax.Array, dim: int, max_positions: int = 10000) -> jax.Array:
    """Sinusoidal embedding of (B,) time conditions (Transformer / DDPM):

        emb[:, k] = sin(t w_k), emb[:, dim/2 + k] = cos(t w_k),  w_k = max_positions^(-k / (dim/2 - 1)).
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_positions) * jnp.arange(half, dtype=jnp.float32) / (half - 1))
    args = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
    if dim % 2 == 1:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection:

        h = x + NIN_out(softmax(q k^T / sqrt(C)) v),  q, k, v = NIN(GroupNorm(x)).
    """

    skip_rescale: bool = False

    @nn.compact
    def __call__(self, x):
        B, H, W, C = x.shape
        h = group_norm(x)
        q, k, v = NIN(C)(h), NIN(C)(h), NIN(C)(h)
        w = jnp.einsum("bhwc,bHWc->bhwHW", q, k) * (C**-0.5)
        w = jax.nn.softmax(w.reshape(B, H, W, H * W).astype(jnp.float32), axis=-1).astype(v.dtype)
        h = jnp.einsum("bhwn,bnc->bhwc", w, v.reshape(B, H * W, C))
        h = NIN(C, init_scale=0.0)(h)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling, optionally followed by a 3x3 convolution."""

    out_ch: int | None = None
    with_conv: bool = False

    @nn.compact
    def __call__(self, x):
        B, H, W, C = x.shape
        h = jax.image.resize(x, (B, 2 * H, 2 * W, C), "nearest")
        return conv3x3(h, self.out_ch or C) if self.with_conv else h


class Downsample(nn.Module):
    """2x downsampling by a strided 3x3 convolution or 2x2 average pooling."""

    out_ch: int | None = None
    with_conv: bool = False

    @nn.compact
    def __call__(self, x):
        if self.with_conv:
            return conv3x3(x, self.out_ch or x.shape[-1], stride=2)
        return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME")


class ResnetBlockDDPM(nn.Module):
    """DDPM residual block: GroupNorm-act-conv, + Dense(act(temb)), GroupNorm-act-dropout-conv(zero init),
    with a NIN (or 3x3 conv) shortcut when the channel count changes."""

    act: callable
    out_ch: int | None = None
    conv_shortcut: bool = False
    dropout: float = 0.1
    skip_rescale: bool = False

    @nn.compact
    def __call__(self, x, temb=None, train: bool = False):
        C = x.shape[-1]
        out_ch = self.out_ch or C
        h = conv3x3(self.act(group_norm(x)), out_ch)
        if temb is not None:
            h = h + nn.Dense(out_ch, kernel_init=default_init())(self.act(temb))[:, None, None, :]
        h = self.act(group_norm(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = conv3x3(h, out_ch, init_scale=0.0)
        if C != out_ch:
            x = conv3x3(x, out_ch) if self.conv_shortcut else NIN(out_ch)(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h
