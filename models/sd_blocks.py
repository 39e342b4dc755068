"""The blocks of Stable Diffusion's U-Net and ControlNet (diffusers' ResnetBlock2D, Downsample2D, Upsample2D,
CrossAttnDownBlock2D / DownBlock2D, CrossAttnUpBlock2D / UpBlock2D, UNetMidBlock2DCrossAttn, TimestepEmbedding),
named after the diffusers attributes so that `models.convert.torch_to_flax` loads their weights.

NHWC throughout. A level's blocks share `LevelBlock`'s fields; `heads` = 0 means a level without attention
(DownBlock2D / UpBlock2D), heads > 0 one with a Transformer2DModel after every resnet (the CrossAttn blocks).
Mixed precision as in models/layers.py: layers compute in the activation's dtype, norms in float32.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from models.attention import Transformer2DModel


def conv(x, features: int, name: str, kernel: int = 3, stride: int = 1, pad: tuple | None = None,
         zero: bool = False):
    """PyTorch's Conv2d(kernel, stride, padding=(kernel - 1) // 2) on NHWC (or `pad` = (low, high) per side);
    zero-initialised kernel and bias with zero=True (ControlNet's zero convolutions)."""
    pad = pad or ((kernel - 1) // 2,) * 2
    init = {"kernel_init": nn.initializers.zeros} if zero else {}
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=(pad, pad), dtype=x.dtype,
                   name=name, **init)(x)


def group_norm(x, groups: int, eps: float, name: str):
    """GroupNorm(groups, eps) with learnt scale and bias, computed in float32."""
    return nn.GroupNorm(num_groups=groups, epsilon=eps, dtype=jnp.float32, name=name)(x).astype(x.dtype)


class TimestepEmbedding(nn.Module):
    """The time-embedding MLP: emb = linear_2(SiLU(linear_1(e(t)))), e(t) the sinusoidal embedding."""

    features: int

    @nn.compact
    def __call__(self, emb):
        h = nn.silu(nn.Dense(self.features, dtype=emb.dtype, name="linear_1")(emb))
        return nn.Dense(self.features, dtype=emb.dtype, name="linear_2")(h)


class ResnetBlock2D(nn.Module):
    """diffusers' ResnetBlock2D (time_scale_shift 'default'; without `emb` and time_emb_proj, the autoencoder's):

        h = conv1(SiLU(GN_1(x))) + time_emb_proj(SiLU(emb))
        h = conv2(Dropout(SiLU(GN_2(h))))
        out = (shortcut(x) + h) / output_scale_factor,   shortcut a 1x1 conv when the width changes.
    """

    out_channels: int
    groups: int = 32
    eps: float = 1e-5
    dropout: float = 0.0
    output_scale_factor: float = 1.0

    @nn.compact
    def __call__(self, x, emb=None, train: bool = False):
        h = conv(nn.silu(group_norm(x, self.groups, self.eps, "norm1")), self.out_channels, "conv1")
        if emb is not None:
            h = h + nn.Dense(self.out_channels, dtype=x.dtype, name="time_emb_proj")(nn.silu(emb))[:, None, None, :]
        h = nn.Dropout(self.dropout)(nn.silu(group_norm(h, self.groups, self.eps, "norm2")), deterministic=not train)
        h = conv(h, self.out_channels, "conv2")
        if x.shape[-1] != self.out_channels:
            x = conv(x, self.out_channels, "conv_shortcut", kernel=1)
        return (x + h) / self.output_scale_factor


def nearest_resize(x, size: tuple):
    """PyTorch's nearest interpolation of NHWC x to spatial `size`: out[i] = in[floor(i in_size / size)]."""
    rows = (jnp.arange(size[0]) * x.shape[1]) // size[0]
    cols = (jnp.arange(size[1]) * x.shape[2]) // size[1]
    return x[:, rows][:, :, cols]


class Downsample2D(nn.Module):
    """Stride-2 3x3 convolution with padding `pad` = (low, high) on each spatial axis."""

    out_channels: int
    pad: tuple = (1, 1)

    @nn.compact
    def __call__(self, x):
        return conv(x, self.out_channels, "conv", stride=2, pad=self.pad)


class Upsample2D(nn.Module):
    """Nearest-neighbour upsampling (2x, or to `size`) followed by a 3x3 convolution."""

    out_channels: int

    @nn.compact
    def __call__(self, x, size: tuple | None = None):
        x = nearest_resize(x, size or (2 * x.shape[1], 2 * x.shape[2]))
        return conv(x, self.out_channels, "conv")


class LevelBlock(nn.Module):
    """Fields shared by a U-Net level's blocks: `num_layers` resnets of width `out_channels`, each followed by
    a Transformer2DModel with `heads` heads of width out_channels / heads (none when heads = 0)."""

    out_channels: int
    num_layers: int
    heads: int = 0
    transformer_depth: int = 1
    use_linear_projection: bool = False
    groups: int = 32
    eps: float = 1e-5
    dropout: float = 0.0

    def resnet(self, i: int, output_scale_factor: float = 1.0):
        return ResnetBlock2D(self.out_channels, self.groups, self.eps, self.dropout, output_scale_factor,
                             name=f"resnets_{i}")

    def attend(self, i: int, h, context, mask, train: bool):
        if not self.heads:
            return h
        return Transformer2DModel(self.heads, self.out_channels // self.heads, self.transformer_depth, self.groups,
                                  self.use_linear_projection, self.dropout, name=f"attentions_{i}")(
                                      h, context, mask, train)


class DownBlock2D(LevelBlock):
    """CrossAttnDownBlock2D (heads > 0) or DownBlock2D: h = attn_i(resnet_i(h)) for each layer, then a stride-2
    3x3 conv (`downsample_padding` on every side; 0 pads only the bottom / right by 1, as diffusers does).
    Returns (h, the skip activations: every layer's output, and the downsampled one)."""

    add_downsample: bool = True
    downsample_padding: int = 1

    @nn.compact
    def __call__(self, h, emb, context=None, mask=None, train: bool = False):
        skips = []
        for i in range(self.num_layers):
            h = self.attend(i, self.resnet(i)(h, emb, train), context, mask, train)
            skips.append(h)
        if self.add_downsample:
            p = self.downsample_padding
            h = Downsample2D(self.out_channels, (p, p) if p else (0, 1), name="downsamplers_0")(h)
            skips.append(h)
        return h, skips


class UpBlock2D(LevelBlock):
    """CrossAttnUpBlock2D (heads > 0) or UpBlock2D: for each layer h = attn_i(resnet_i([h, skip])) with the skips
    taken last first, then nearest 2x upsampling (to `upsample_size` when given) and a 3x3 conv."""

    add_upsample: bool = True

    @nn.compact
    def __call__(self, h, skips, emb, context=None, mask=None, train: bool = False, upsample_size=None):
        for i in range(self.num_layers):
            h = jnp.concatenate([h, skips[-1 - i]], axis=-1)
            h = self.attend(i, self.resnet(i)(h, emb, train), context, mask, train)
        if self.add_upsample:
            h = Upsample2D(self.out_channels, name="upsamplers_0")(h, upsample_size)
        return h


class UNetMidBlock2DCrossAttn(LevelBlock):
    """The middle: h = resnet_0(h), then h = resnet_i(attn_{i-1}(h)) for i = 1..num_layers, every resnet's
    output divided by `output_scale_factor`."""

    output_scale_factor: float = 1.0

    @nn.compact
    def __call__(self, h, emb, context=None, mask=None, train: bool = False):
        h = self.resnet(0, self.output_scale_factor)(h, emb, train)
        for i in range(self.num_layers):
            h = self.attend(i, h, context, mask, train)
            h = self.resnet(i + 1, self.output_scale_factor)(h, emb, train)
        return h
