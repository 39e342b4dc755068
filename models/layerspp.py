"""Layers of NCSN++ / DDPM++ (Song et al. 2021, App. H) beyond the DDPM ones in layers.py.

The DDPM++ `ddpm` residual block and the attention block are layers.ResnetBlockDDPM
and layers.AttnBlock with init_scale / skip_rescale set; FIR resampling is
layers.Upsample / layers.Downsample with fir=True.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers
from models import up_or_down_sampling as updown

#: Variable collection of the fixed random Fourier frequencies: model state, not trained parameters.
CONSTANTS = "constants"


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of a scalar (Tancik et al. 2020), for log sigma in NCSN++:

        gamma(s) = [sin(2 pi W s), cos(2 pi W s)],  W ~ N(0, scale^2 I_embedding_size), fixed.

    W is drawn from the 'params' rng at init but kept in the 'constants' collection, so
    optimizers, weight decay and EMA never touch it (score_sde's frozen parameter).
    """

    embedding_size: int = 256
    scale: float = 1.0

    @nn.compact
    def __call__(self, s):
        W = self.variable(CONSTANTS, "W",
                          lambda: self.scale * jax.random.normal(self.make_rng("params"), (self.embedding_size,)))
        proj = s.astype(jnp.float32)[:, None] * W.value[None, :] * (2.0 * math.pi)
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class Combine(nn.Module):
    """Merge a progressive-input image pyramid level x into features y: conv1x1(x) + y ('sum') or
    [conv1x1(x), y] concatenated on channels ('cat')."""

    method: str = "cat"

    @nn.compact
    def __call__(self, x, y):
        h = layers.conv1x1(x, y.shape[-1])
        return jnp.concatenate([h, y], axis=-1) if self.method == "cat" else h + y


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN-style residual block of NCSN++, optionally resampling by 2 inside the block:

        h = resnet_branch(R(act(GroupNorm(x)))),  out = Conv1x1(R(x)) + h  [/ sqrt 2],

    R = FIR or naive up/down-sampling (identity when up = down = False); the 1x1 shortcut
    exists when channels change or the block resamples.
    """

    act: callable
    out_ch: int | None = None
    up: bool = False
    down: bool = False
    dropout: float = 0.1
    fir: bool = False
    fir_kernel: tuple = (1, 3, 3, 1)
    skip_rescale: bool = True
    init_scale: float = 0.0
    norm_groups: str = "quarter_channels"

    @nn.compact
    def __call__(self, x, temb=None, train: bool = False):
        C = x.shape[-1]
        out_ch = self.out_ch or C
        h = self.act(layers.group_norm(x, self.norm_groups))
        if self.up or self.down:
            resample = updown.upsample if self.up else updown.downsample
            h, x = resample(h, self.fir, tuple(self.fir_kernel)), resample(x, self.fir, tuple(self.fir_kernel))
        h = layers.resnet_branch(h, temb, out_ch, self.act, self.dropout, self.init_scale, train, self.norm_groups)
        if C != out_ch or self.up or self.down:
            x = layers.conv1x1(x, out_ch)
        return layers.residual_sum(x, h, self.skip_rescale)
