"""Stable Diffusion's autoencoder (AutoencoderKL of Rombach et al. 2022), laid out like diffusers' so that its
parameter tree maps one-to-one onto a diffusers folder by models.convert's naming rule.

    x (B, H, W, C_in) in [-1, 1]  --encoder-->  (B, h, w, 2c)  --quant_conv-->  moments = (mean, log sigma^2)
    z ~ q(z|x) = N(mean, diag(exp(logvar)))     with logvar clamped to [-30, 20]
    z (B, h, w, c)  --post_quant_conv-->  --decoder-->  x_hat (B, H, W, C_out)

h = H / 2^(L-1) for L = len(block_out_channels). Every norm is a GroupNorm(norm_num_groups, eps=1e-6) and every
activation SiLU. Encoder: conv_in; per level `layers_per_block` ResnetBlock2D then (all but the last level) a
downsampler that pads the bottom/right edge by one and applies a stride-2 3x3 conv; a mid block (resnet,
single-head self-attention, resnet); conv_norm_out, SiLU, conv_out. Decoder: the mirror image, with
`layers_per_block + 1` resnets per level and nearest-neighbour x2 upsampling followed by a 3x3 conv.
Images are NHWC here; the reference is NCHW.
"""
from __future__ import annotations

import os
from typing import Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import attend
from models.convert import ConversionError, read_diffusers_folder, torch_to_flax
from models.sd_blocks import Downsample2D, ResnetBlock2D, Upsample2D, conv, group_norm

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0
_EPS = 1e-6


class MidAttention(nn.Module):
    """Single-head spatial self-attention with a residual: with n = GroupNorm(x) flattened to (B, HW, C),
    out = x + W_o softmax(q k^T / sqrt(C)) v + b_o, q = n W_q + b_q (likewise k, v)."""
    groups: int

    @nn.compact
    def __call__(self, x):
        b, hgt, wid, c = x.shape
        n = group_norm(x, self.groups, _EPS, "group_norm").reshape(b, hgt * wid, c)
        return x + attend(n, None, heads=1, dim_head=c, qkv_bias=True).reshape(x.shape)


class MidBlock(nn.Module):
    """resnets_0 -> attentions_0 (optional) -> resnets_1, at the lowest resolution."""
    groups: int
    attention: bool

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        x = ResnetBlock2D(c, self.groups, _EPS, name="resnets_0")(x)
        if self.attention:
            x = MidAttention(self.groups, name="attentions_0")(x)
        return ResnetBlock2D(c, self.groups, _EPS, name="resnets_1")(x)


class ResnetStack(nn.Module):
    """diffusers' DownEncoderBlock2D / UpDecoderBlock2D: resnets_0..resnets_{n-1}, then optionally
    downsamplers_0 or upsamplers_0."""
    channels: int
    num_resnets: int
    groups: int
    resample: str | None = None  # "down", "up" or None

    @nn.compact
    def __call__(self, x):
        for i in range(self.num_resnets):
            x = ResnetBlock2D(self.channels, self.groups, _EPS, name=f"resnets_{i}")(x)
        if self.resample == "down":  # pad only the bottom / right edge, as the reference does
            x = Downsample2D(self.channels, (0, 1), name="downsamplers_0")(x)
        elif self.resample == "up":
            x = Upsample2D(self.channels, name="upsamplers_0")(x)
        return x


class _Tower(nn.Module):
    """The fields the encoder and the decoder share (diffusers' Encoder / Decoder arguments)."""
    out_channels: int
    block_out_channels: Sequence[int]
    layers_per_block: int
    groups: int
    mid_block_attention: bool = True


class Encoder(_Tower):
    """x -> (B, h, w, out_channels); out_channels is 2c for the KL autoencoder (moments), c for the VQ one."""

    @nn.compact
    def __call__(self, x):
        chans = tuple(self.block_out_channels)
        h = conv(x, chans[0], "conv_in")
        for level, ch in enumerate(chans):
            h = ResnetStack(ch, self.layers_per_block, self.groups, "down" if level < len(chans) - 1 else None,
                            name=f"down_blocks_{level}")(h)
        h = MidBlock(self.groups, self.mid_block_attention, name="mid_block")(h)
        h = nn.silu(group_norm(h, self.groups, _EPS, "conv_norm_out"))
        return conv(h, self.out_channels, "conv_out")


class Decoder(_Tower):
    """z (B, h, w, c) -> (B, H, W, out_channels): conv_in, mid block, up blocks over reversed channels, out."""

    @nn.compact
    def __call__(self, z):
        chans = tuple(reversed(self.block_out_channels))
        h = conv(z, chans[0], "conv_in")
        h = MidBlock(self.groups, self.mid_block_attention, name="mid_block")(h)
        for level, ch in enumerate(chans):
            h = ResnetStack(ch, self.layers_per_block + 1, self.groups, "up" if level < len(chans) - 1 else None,
                            name=f"up_blocks_{level}")(h)
        h = nn.silu(group_norm(h, self.groups, _EPS, "conv_norm_out"))
        return conv(h, self.out_channels, "conv_out")


@flax.struct.dataclass
class DiagonalGaussian:
    """q(z|x) = N(mean, diag(exp(logvar))), logvar already clamped to [LOGVAR_MIN, LOGVAR_MAX]."""
    mean: jax.Array
    logvar: jax.Array

    @classmethod
    def from_moments(cls, moments):
        """Split the last axis (2c) into mean (first c) and log-variance (last c), clamping the latter."""
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return cls(mean, jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX))

    @property
    def std(self):
        return jnp.exp(0.5 * self.logvar)

    def sample(self, rng):
        """z = mean + std * eps, eps ~ N(0, I) (the reparameterisation, differentiable in mean and logvar)."""
        return self.mean + self.std * jax.random.normal(rng, self.mean.shape, self.mean.dtype)

    def mode(self):
        return self.mean


class AutoencoderKL(nn.Module):
    """The KL-regularised autoencoder; field names and defaults are diffusers' AutoencoderKL config keys.

    `encode(x) -> (mean, logvar)`, `decode(z) -> x_hat`, and for training
    `__call__(x, rng=None) -> (x_hat, posterior)` with z sampled from the posterior when rng is given (its mean
    otherwise). Apply the methods with `model.apply(variables, x, method=model.encode)`.
    """
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: Sequence[int] = (64,)
    layers_per_block: int = 1
    norm_num_groups: int = 32
    mid_block_add_attention: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True

    def setup(self):
        shared = dict(block_out_channels=tuple(self.block_out_channels), layers_per_block=self.layers_per_block,
                      groups=self.norm_num_groups, mid_block_attention=self.mid_block_add_attention)
        self.encoder = Encoder(2 * self.latent_channels, **shared)
        self.decoder = Decoder(self.out_channels, **shared)
        if self.use_quant_conv:
            self.quant_conv = nn.Conv(2 * self.latent_channels, (1, 1), name="quant_conv")
        if self.use_post_quant_conv:
            self.post_quant_conv = nn.Conv(self.latent_channels, (1, 1), name="post_quant_conv")

    def posterior(self, x) -> DiagonalGaussian:
        moments = self.encoder(x)
        if self.use_quant_conv:
            moments = self.quant_conv(moments)
        return DiagonalGaussian.from_moments(moments)

    def encode(self, x):
        """x (B, H, W, in_channels) in [-1, 1] -> (mean, logvar), each (B, h, w, latent_channels)."""
        q = self.posterior(x)
        return q.mean, q.logvar

    def decode(self, z):
        """z (B, h, w, latent_channels) (unscaled: divide SD latents by scaling_factor first) -> x_hat."""
        if self.use_post_quant_conv:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def __call__(self, x, rng=None):
        q = self.posterior(x)
        z = q.mode() if rng is None else q.sample(rng)
        return self.decode(z), q


def check_block_types(config: dict, path: str) -> None:
    """Only the plain encoder/decoder blocks and SiLU are built here; refuse anything else in one line."""
    expected = {"down_block_types": "DownEncoderBlock2D", "up_block_types": "UpDecoderBlock2D"}
    for key, kind in expected.items():
        others = sorted(set(config.get(key, [kind])) - {kind})
        if others:
            raise ConversionError(f"{path}: {key} {others} are not supported (only {kind}).")
    if config.get("act_fn", "silu") != "silu":
        raise ConversionError(f"{path}: act_fn {config['act_fn']!r} is not supported (only 'silu').")


def params_from_tensors(module: nn.Module, tensors: dict, source: str, sample_shape: tuple):
    """Params for `module` filled from `tensors`; the target tree comes from jax.eval_shape (nothing is
    initialised)."""
    target = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros(sample_shape, jnp.float32))
    return flax.core.unfreeze(torch_to_flax(tensors, target["params"], source=source))


def load_diffusers_autoencoder_kl(folder: str):
    """Reads a diffusers AutoencoderKL folder -> (AutoencoderKL, params, scaling_factor).

    Latent-diffusion latents are scaling_factor * z (0.18215 for SD 1.x); decode(latents / scaling_factor).
    """
    config, tensors = read_diffusers_folder(folder, "AutoencoderKL")
    path = os.path.join(folder, "config.json")
    check_block_types(config, path)
    for key in ("shift_factor", "latents_mean", "latents_std"):
        if config.get(key) is not None:
            raise ConversionError(f"{path}: {key} is set; only a plain scaling_factor is supported.")
    module = AutoencoderKL(
        in_channels=config.get("in_channels", 3), out_channels=config.get("out_channels", 3),
        latent_channels=config.get("latent_channels", 4),
        block_out_channels=tuple(config.get("block_out_channels", (64,))),
        layers_per_block=config.get("layers_per_block", 1), norm_num_groups=config.get("norm_num_groups", 32),
        mid_block_add_attention=config.get("mid_block_add_attention", True),
        use_quant_conv=config.get("use_quant_conv", True),
        use_post_quant_conv=config.get("use_post_quant_conv", True))
    size = 2 ** (len(module.block_out_channels) - 1)
    params = params_from_tensors(module, tensors, os.path.join(folder, "diffusion_pytorch_model.safetensors"),
                     (1, size, size, module.in_channels))
    return module, params, float(config.get("scaling_factor", 0.18215))
