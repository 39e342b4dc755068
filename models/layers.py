"""Layers shared by the score networks (DDPM, the NCSN++/DDPM++ family, NCSNv2).

Parameter shapes and initialisers follow the DDPM reference implementation
(Ho et al. 2020) as carried into score_sde: variance-scaling "fan_avg" uniform
initialisation with a per-layer scale, zero-initialised output layers, and
GroupNorm with config.model.norm_groups groups (`NORM_GROUPS`).

Mixed precision is one rule, kept here: every layer computes in the dtype of
the activation it receives (config.model.dtype, set once where a model casts
its input), parameters stay float32, and normalisation statistics and softmax
are computed in float32 before casting back.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import up_or_down_sampling as updown

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def choice(config, field: str, choices) -> str:
    """config.model.<field>, lower-cased, checked to be one of `choices`."""
    value = str(config.model[field]).lower()
    if value not in choices:
        raise ValueError(f"Unknown config.model.{field} {value!r}; choose one of {sorted(choices)}.")
    return value


def output_channels(config, channels: int) -> int:
    """Channels of a score network's output for data of `channels`: C, or 2C with config.model.learned_variance
    (eps, then Nichol & Dhariwal's v; models/score_fn.py splits them)."""
    return 2 * channels if config.model.get("learned_variance", False) else channels


def compute_dtype(config):
    """The activation dtype named by config.model.dtype ('float32' or 'bfloat16')."""
    return DTYPES[choice(config, "dtype", DTYPES)]


def default_init(scale: float = 1.0):
    """DDPM initialiser: variance scaling (fan_avg, uniform) with the given scale (0 -> 1e-10)."""
    return nn.initializers.variance_scaling(1e-10 if scale == 0 else scale, "fan_avg", "uniform")


ACTIVATIONS = {"swish": nn.swish, "silu": nn.swish, "relu": nn.relu, "elu": nn.elu, "lrelu": lambda x: nn.leaky_relu(x, 0.2)}


def get_act(config):
    """The nonlinearity named by config.model.nonlinearity."""
    return ACTIVATIONS[choice(config, "nonlinearity", ACTIVATIONS)]


def residual_sum(x, h, skip_rescale: bool):
    """x + h, or (x + h) / sqrt(2) with skip_rescale (keeps unit variance for independent x, h)."""
    return (x + h) / math.sqrt(2.0) if skip_rescale else x + h


def add_control(skips, mid, control):
    """A ControlNet's residuals added where diffusers' U-Net adds them: (skips_i + r_i, mid + r_mid) for
    control = ([r_0 .. r_n], r_mid), residual i on skip i (push order) before the up path consumes it."""
    down, r_mid = control
    if len(down) != len(skips):
        raise ValueError(f"control has {len(down)} down residuals; this U-Net has {len(skips)} skips.")
    return [s + r.astype(s.dtype) for s, r in zip(skips, down)], mid + r_mid.astype(mid.dtype)


def concat_input(x, concat):
    """[x, c] on the channel axis (B, H, W, C + C_c): latent diffusion's 'concat' conditioning, the condition
    image c (B, H, W, C_c) entering the input conv beside x; x itself when c is None."""
    if concat is None:
        return x
    if concat.shape[:3] != x.shape[:3]:
        raise ValueError(f"The concat condition has shape {tuple(concat.shape)}; the input is {tuple(x.shape)}: "
                         f"give (B, H, W, C_c) at the denoiser's batch and resolution.")
    return jnp.concatenate([x, concat.astype(x.dtype)], axis=-1)


#: GroupNorm group counts G(C) of C channels (config.model.norm_groups): 'fixed_32', G = 32, as in DDPM
#: (Ho et al. 2020; score_sde's ddpm.py); 'quarter_channels', G = min(C // 4, 32), as in score_sde's
#: NCSN++ / DDPM++, and this framework's rule for every network before it had the option.
NORM_GROUPS = {"fixed_32": lambda channels: 32, "quarter_channels": lambda channels: min(channels // 4, 32)}


def norm_groups(config) -> str:
    """config.model.norm_groups, checked to be one of NORM_GROUPS."""
    return choice(config, "norm_groups", NORM_GROUPS)


def group_norm(x: jax.Array, groups: str) -> jax.Array:
    """GroupNorm with NORM_GROUPS[groups](C) groups and eps 1e-6, computed in float32 (a fresh layer per call site)."""
    channels = x.shape[-1]
    num_groups = NORM_GROUPS[groups](channels)
    if channels % num_groups:
        other = " or set config.model.norm_groups='quarter_channels'" if groups != "quarter_channels" else ""
        raise ValueError(f"GroupNorm with {num_groups} groups ('{groups}') needs a multiple of {num_groups} "
                         f"channels, got {channels}; choose config.model.nf and ch_mult so that every width (skip "
                         f"concatenations included) is a multiple of its group count{other}.")
    return nn.GroupNorm(num_groups=num_groups, epsilon=1e-6, dtype=jnp.float32)(x).astype(x.dtype)


def conv3x3(x, out_ch: int, stride: int = 1, init_scale: float = 1.0):
    return nn.Conv(out_ch, (3, 3), strides=(stride, stride), padding="SAME",
                   kernel_init=default_init(init_scale), dtype=x.dtype)(x)


def conv1x1(x, out_ch: int, init_scale: float = 1.0):
    return nn.Conv(out_ch, (1, 1), padding="SAME", kernel_init=default_init(init_scale),
                   dtype=x.dtype)(x)


def dense(x, features: int, init_scale: float = 1.0):
    return nn.Dense(features, kernel_init=default_init(init_scale), dtype=x.dtype)(x)


class NIN(nn.Module):
    """Network-in-network: a per-pixel linear map of channels, y = x W + b."""

    num_units: int
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        return dense(x, self.num_units, self.init_scale)


def timestep_embedding(timesteps: jax.Array, dim: int, max_positions: int = 10000,
                       flip_sin_to_cos: bool = False, freq_shift: float = 1.0) -> jax.Array:
    """Sinusoidal embedding of (B,) time conditions (Transformer / DDPM), in float32:

        emb[:, k] = sin(t w_k), emb[:, dim/2 + k] = cos(t w_k),  w_k = max_positions^(-k / (dim/2 - freq_shift)),

    with the cosines first when flip_sin_to_cos. DDPM's is freq_shift 1 without the flip; diffusers'
    Timesteps(num_channels, flip_sin_to_cos, downscale_freq_shift) is this with freq_shift = downscale_freq_shift.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_positions) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
    args = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
    parts = [jnp.cos(args), jnp.sin(args)] if flip_sin_to_cos else [jnp.sin(args), jnp.cos(args)]
    emb = jnp.concatenate(parts, axis=1)
    if dim % 2 == 1:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def embedding_mlp(emb: jax.Array, features: int, act) -> jax.Array:
    """The DDPM time-embedding MLP: Dense(features) -> act -> Dense(features)."""
    return dense(act(dense(emb, features)), features)


def add_label_embedding(emb, labels, num_classes: int, features: int, batch_size: int, dtype):
    """emb + E[y] for a class-conditional model (num_classes > 0), else emb unchanged.

    E is an nn.Embed(num_classes + 1, features); y = labels, and the extra index
    num_classes is the null label (labels=None), the unconditional branch that
    classifier-free guidance mixes with the conditional one. With emb None the
    result is E[y] alone.
    """
    if num_classes <= 0:
        if labels is not None:
            raise ValueError("Labels were given to an unconditional model; set config.model.num_classes > 0.")
        return emb
    y = jnp.full((batch_size,), num_classes, jnp.int32) if labels is None else labels.astype(jnp.int32)
    label_emb = nn.Embed(num_classes + 1, features)(y).astype(dtype)
    return label_emb if emb is None else emb + label_emb


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection:

        h = x + NIN_out(softmax(q k^T / sqrt(C)) v),  q, k, v = NIN(GroupNorm(x)),

    NIN_out initialised with init_scale (0 in DDPM); the sum divided by sqrt(2) with skip_rescale.
    """

    skip_rescale: bool = False
    init_scale: float = 0.0
    norm_groups: str = "quarter_channels"

    @nn.compact
    def __call__(self, x):
        B, H, W, C = x.shape
        h = group_norm(x, self.norm_groups)
        q, k, v = NIN(C)(h), NIN(C)(h), NIN(C)(h)
        w = jnp.einsum("bhwc,bHWc->bhwHW", q, k) * (C**-0.5)
        w = jax.nn.softmax(w.reshape(B, H, W, H * W).astype(jnp.float32), axis=-1).astype(v.dtype)
        h = jnp.einsum("bhwn,bnc->bhwc", w, v.reshape(B, H * W, C))
        return residual_sum(x, NIN(C, init_scale=self.init_scale)(h), self.skip_rescale)


class _ResampleConv(nn.Module):
    """3x3 convolution fused with FIR 2x upsampling (up=True) or downsampling (StyleGAN2's Conv2d)."""

    features: int
    up: bool
    fir_kernel: tuple = (1, 3, 3, 1)

    @nn.compact
    def __call__(self, x):
        w = self.param("kernel", default_init(), (3, 3, x.shape[-1], self.features)).astype(x.dtype)
        b = self.param("bias", nn.initializers.zeros, (self.features,)).astype(x.dtype)
        resample = updown.upsample_conv_2d if self.up else updown.conv_downsample_2d
        return resample(x, w, self.fir_kernel) + b


class Upsample(nn.Module):
    """2x upsampling, nearest-neighbour or FIR (fir=True), optionally with a 3x3 convolution to out_ch
    (after nearest-neighbour upsampling; fused with the FIR filter)."""

    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: tuple = (1, 3, 3, 1)

    @nn.compact
    def __call__(self, x):
        out_ch = self.out_ch or x.shape[-1]
        if self.fir and self.with_conv:
            return _ResampleConv(out_ch, up=True, fir_kernel=tuple(self.fir_kernel))(x)
        h = updown.upsample(x, self.fir, tuple(self.fir_kernel))
        return conv3x3(h, out_ch) if self.with_conv else h


class Downsample(nn.Module):
    """2x downsampling: a strided 3x3 convolution to out_ch, or 2x2 average pooling; with fir=True
    the FIR filter [fused with the convolution] instead."""

    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: tuple = (1, 3, 3, 1)

    @nn.compact
    def __call__(self, x):
        out_ch = self.out_ch or x.shape[-1]
        if not self.with_conv:
            return updown.downsample(x, self.fir, tuple(self.fir_kernel))
        if self.fir:
            return _ResampleConv(out_ch, up=False, fir_kernel=tuple(self.fir_kernel))(x)
        return conv3x3(x, out_ch, stride=2)


def resnet_branch(h, temb, out_ch: int, act, dropout: float, init_scale: float, train: bool, norm_groups: str):
    """The residual branch shared by the DDPM and BigGAN blocks, from act(GroupNorm(x)) on:

        Conv3x3(h) + Dense(act(temb)) -> GroupNorm -> act -> Dropout -> Conv3x3 (init_scale).
    """
    h = conv3x3(h, out_ch)
    if temb is not None:
        h = h + dense(act(temb), out_ch)[:, None, None, :]
    h = act(group_norm(h, norm_groups))
    h = nn.Dropout(dropout)(h, deterministic=not train)
    return conv3x3(h, out_ch, init_scale=init_scale)


class ResnetBlockDDPM(nn.Module):
    """DDPM residual block (also DDPM++'s `ddpm` block): x + resnet_branch(act(GroupNorm(x))),
    with a NIN shortcut when the channel count changes."""

    act: callable
    out_ch: int | None = None
    dropout: float = 0.1
    skip_rescale: bool = False
    init_scale: float = 0.0
    norm_groups: str = "quarter_channels"

    @nn.compact
    def __call__(self, x, temb=None, train: bool = False):
        C = x.shape[-1]
        out_ch = self.out_ch or C
        h = resnet_branch(self.act(group_norm(x, self.norm_groups)), temb, out_ch, self.act, self.dropout,
                          self.init_scale, train, self.norm_groups)
        if C != out_ch:
            x = NIN(out_ch)(x)
        return residual_sum(x, h, self.skip_rescale)
