"""NCSN++ and DDPM++ (Song et al. 2021, "Score-Based Generative Modeling through SDEs", App. H).

One U-Net family; score_sde's configs pick the members (config.model):

* `resblock_type`: 'ddpm' (DDPM block, separate Up/Downsample layers) or 'biggan'
  (BigGAN block that resamples inside itself);
* `fir` / `fir_kernel`: FIR (StyleGAN2) instead of nearest/average resampling;
* `progressive_input`: 'none', 'input_skip' (the input image, downsampled, is merged
  into each level's features by a `progressive_combine` Combine layer) or 'residual'
  (a learned pyramid h_l <- (Down(h_{l-1}) + h_l) [/ sqrt 2]);
* `progressive`: 'none', 'output_skip' (the output is a sum of per-level conv outputs,
  upsampled) or 'residual' (a learned pyramid added into each level's features);
* `embedding_type`: 'positional' (sinusoidal embedding of time_cond) or 'fourier'
  (Gaussian Fourier features of log time_cond, time_cond = sigma(t) for VE);
* `skip_rescale`, `init_scale`, `dropout`, `resamp_with_conv`, `attn_resolutions`.

DDPM++ is ('biggan', fir off, no progressive paths, positional); NCSN++ adds FIR and a
residual input pyramid. The output is the raw network output: the 1/sigma of
`scale_by_sigma` is applied by models.get_score_fn, not here.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from models import layers, layerspp
from models.registry import register_model

CHOICES = {
    "resblock_type": ("ddpm", "biggan"),
    "progressive": ("none", "output_skip", "residual"),
    "progressive_input": ("none", "input_skip", "residual"),
    "progressive_combine": ("sum", "cat"),
    "embedding_type": ("fourier", "positional"),
    "attention_type": ("ddpm",),
}


@dataclasses.dataclass(frozen=True)
class _Options:
    resblock_type: str
    progressive: str
    progressive_input: str
    progressive_combine: str
    embedding_type: str
    attention_type: str


def _options(config) -> _Options:
    """The architecture switches of config.model, checked against CHOICES."""
    opts = _Options(**{field: layers.choice(config, field, choices) for field, choices in CHOICES.items()})
    if opts.embedding_type == "fourier" and not config.training.continuous:
        raise ValueError("config.model.embedding_type='fourier' embeds log sigma(t) and needs "
                         "config.training.continuous=True; use 'positional' for discrete-time training.")
    return opts


def _blocks(config):
    """(resblock(out_ch=None, up=False, down=False), attention(h)) module factories of config.model."""
    m, opts = config.model, _options(config)
    act, groups = layers.get_act(config), layers.norm_groups(config)
    fir = dict(fir=m.fir, fir_kernel=tuple(m.fir_kernel))

    def resblock(out_ch=None, up=False, down=False):
        if opts.resblock_type == "ddpm":
            return layers.ResnetBlockDDPM(act=act, out_ch=out_ch, dropout=m.dropout, skip_rescale=m.skip_rescale,
                                          init_scale=m.init_scale, norm_groups=groups)
        return layerspp.ResnetBlockBigGANpp(act=act, out_ch=out_ch, up=up, down=down, dropout=m.dropout,
                                            skip_rescale=m.skip_rescale, init_scale=m.init_scale,
                                            norm_groups=groups, **fir)

    def attention(h):
        return layers.AttnBlock(skip_rescale=m.skip_rescale, init_scale=m.init_scale, norm_groups=groups)(h)

    return resblock, attention


def encode(config, x, time_cond, labels=None, train: bool = False, hint=None, concat=None):
    """The time embedding, input conv, down path (with its input pyramid) and middle, inside the calling compact
    module (which names and holds the parameters, so a ControlNet that calls it has the U-Net's names):

        temb = MLP(e(time_cond)) (+ E[labels]),  h_0 = conv_in([x, concat]) (+ hint, a ControlNet's embedded
        condition; concat a condition image, layers.concat_input, which the input pyramid does not see),
        skips = [h_0, each level's residual-block outputs, its downsampled output], mid = R(A(R(skips[-1])))

    returns (temb, mid, skips), skips in push order.
    """
    m, opts = config.model, _options(config)
    dtype = layers.compute_dtype(config)
    nf, ch_mult = m.nf, tuple(m.ch_mult)
    fir = dict(fir=m.fir, fir_kernel=tuple(m.fir_kernel))
    resblock, attention = _blocks(config)

    temb = None
    if m.conditional:
        if opts.embedding_type == "fourier":
            emb = layerspp.GaussianFourierProjection(nf, m.fourier_scale)(jnp.log(time_cond))
        else:
            emb = layers.timestep_embedding(time_cond, nf)
        temb = layers.embedding_mlp(emb.astype(dtype), nf * 4, layers.get_act(config))
    temb = layers.add_label_embedding(temb, labels, m.num_classes, nf * 4, x.shape[0], dtype)

    h = (x if config.data.centered else 2.0 * x - 1.0).astype(dtype)
    input_pyramid = h
    h = layers.conv3x3(layers.concat_input(h, concat), nf)
    hs = [h if hint is None else h + hint.astype(dtype)]
    for level in range(len(ch_mult)):
        for _ in range(m.num_res_blocks):
            h = resblock(nf * ch_mult[level])(hs[-1], temb, train)
            if h.shape[1] in m.attn_resolutions:
                h = attention(h)
            hs.append(h)
        if level == len(ch_mult) - 1:
            break
        if opts.resblock_type == "ddpm":
            h = layers.Downsample(with_conv=m.resamp_with_conv, **fir)(hs[-1])
        else:
            h = resblock(down=True)(hs[-1], temb, train)
        if opts.progressive_input == "input_skip":
            input_pyramid = layers.Downsample(**fir)(input_pyramid)
            h = layerspp.Combine(opts.progressive_combine)(input_pyramid, h)
        elif opts.progressive_input == "residual":
            input_pyramid = layers.Downsample(out_ch=h.shape[-1], with_conv=True, **fir)(input_pyramid)
            h = input_pyramid = layers.residual_sum(input_pyramid, h, m.skip_rescale)
        hs.append(h)

    h = resblock()(hs[-1], temb, train)
    h = attention(h)
    return temb, resblock()(h, temb, train), hs


@register_model("ncsnpp")
class NCSNpp(nn.Module):
    """The NCSN++ / DDPM++ U-Net, model(x, time_cond, labels=None, train=False, control=None, concat=None) ->
    (B, H, W, C)
    float32 (2C channels with config.model.learned_variance).

    time_cond (B,) is the noise conditioning of models.noise_conditioning (999 t, sigma(t)
    or a step index); labels (B,) class labels when config.model.num_classes > 0; control a ControlNet's
    (down residuals, mid residual), added to the skips and the middle's output (layers.add_control); concat
    (B, H, W, C_c) a condition image concatenated to the input of the first conv (layers.concat_input).
    """

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x, time_cond, labels=None, train: bool = False, control=None, concat=None):
        m = self.config.model
        opts = _options(self.config)
        act = layers.get_act(self.config)
        nf, ch_mult, channels = m.nf, tuple(m.ch_mult), layers.output_channels(self.config, x.shape[-1])
        fir = dict(fir=m.fir, fir_kernel=tuple(m.fir_kernel))
        groups = layers.norm_groups(self.config)
        resblock, attention = _blocks(self.config)

        def output_conv(h, out_ch, init_scale=1.0):
            return layers.conv3x3(act(layers.group_norm(h, groups)), out_ch, init_scale=init_scale)

        temb, h, hs = encode(self.config, x, time_cond, labels, train, concat=concat)
        if control is not None:
            hs, h = layers.add_control(hs, h, control)

        # Upsampling path, with the optional output pyramid.
        pyramid = None
        for level in reversed(range(len(ch_mult))):
            for _ in range(m.num_res_blocks + 1):
                h = resblock(nf * ch_mult[level])(jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
            if h.shape[1] in m.attn_resolutions:
                h = attention(h)
            if opts.progressive == "output_skip":
                level_out = output_conv(h, channels, m.init_scale)
                pyramid = level_out if pyramid is None else layers.Upsample(**fir)(pyramid) + level_out
            elif opts.progressive == "residual":
                if pyramid is None:
                    pyramid = output_conv(h, h.shape[-1])
                else:
                    pyramid = layers.Upsample(out_ch=h.shape[-1], with_conv=True, **fir)(pyramid)
                    h = pyramid = layers.residual_sum(pyramid, h, m.skip_rescale)
            if level != 0:
                if opts.resblock_type == "ddpm":
                    h = layers.Upsample(with_conv=m.resamp_with_conv, **fir)(h)
                else:
                    h = resblock(up=True)(h, temb, train)
        assert not hs

        out = pyramid if opts.progressive == "output_skip" else output_conv(h, channels, m.init_scale)
        return out.astype(jnp.float32)
