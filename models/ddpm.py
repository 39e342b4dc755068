"""The DDPM U-Net (Ho et al. 2020), as configured by score_sde's `ddpm` configs."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

import sde_lib
from models import layers
from models.registry import register_model


def _resblock(config):
    """The U-Net's residual block factory: resblock(out_ch=None) -> ResnetBlockDDPM."""
    m = config.model
    return lambda out_ch=None: layers.ResnetBlockDDPM(act=layers.get_act(config), out_ch=out_ch, dropout=m.dropout,
                                                      norm_groups=layers.norm_groups(config))


def encode(config, x, time_cond, labels=None, train: bool = False, hint=None, concat=None):
    """The time embedding, input conv, down path and middle, inside the calling compact module (which names and
    holds the parameters, so a ControlNet that calls it has the U-Net's names):

        temb = MLP(e(time_cond)) (+ E[labels]),  h_0 = conv_in(P([x, concat])) (+ hint, a ControlNet's embedded
        condition; concat a condition image, layers.concat_input; P folds config.model.patch_size^2 patches
        into channels, sde_lib.fold_patches),
        skips = [h_0, each level's residual-block outputs, its downsampled output], mid = R(A(R(skips[-1])))

    returns (temb, mid, skips), skips in push order.
    """
    m = config.model
    nf, ch_mult = m.nf, tuple(m.ch_mult)
    groups, resblock = layers.norm_groups(config), _resblock(config)
    dtype = layers.compute_dtype(config)
    temb = None
    if m.conditional:
        temb = layers.embedding_mlp(layers.timestep_embedding(time_cond, nf).astype(dtype), nf * 4,
                                    layers.get_act(config))
    temb = layers.add_label_embedding(temb, labels, m.num_classes, nf * 4, x.shape[0], dtype)

    h = (x if config.data.centered else 2.0 * x - 1.0).astype(dtype)
    h = layers.conv3x3(sde_lib.fold_patches(layers.concat_input(h, concat), m.patch_size), nf)
    hs = [h if hint is None else h + hint.astype(dtype)]
    for level in range(len(ch_mult)):
        for _ in range(m.num_res_blocks):
            h = resblock(nf * ch_mult[level])(hs[-1], temb, train)
            if h.shape[1] in m.attn_resolutions:
                h = layers.AttnBlock(norm_groups=groups)(h)
            hs.append(h)
        if level != len(ch_mult) - 1:
            hs.append(layers.Downsample(with_conv=m.resamp_with_conv)(hs[-1]))

    h = resblock()(hs[-1], temb, train)
    h = layers.AttnBlock(norm_groups=groups)(h)
    return temb, resblock()(h, temb, train), hs


@register_model("ddpm")
class DDPM(nn.Module):
    """U-Net of residual blocks with self-attention at `attn_resolutions`.

    Called as model(x, time_cond, labels=None, train=False, control=None, concat=None) with x in the
    model's data range (B, H, W, C) and time_cond (B,) the noise conditioning chosen by
    `models.get_score_fn` (a timestep index or 999 t for VP, sigma(t) for VE).
    With config.model.num_classes > 0, labels (B,) add a class embedding to the
    time embedding (None: the null label). `control` = (down residuals, mid residual), a
    ControlNet's (models/controlnet.py), adds residual i to skip i and the mid one to the
    middle block's output (layers.add_control); `concat` (B, H, W, C_c), a condition image in [0, 1], is
    concatenated to the (centred) input of the first conv (layers.concat_input). With config.model.patch_size p
    the U-Net runs at H/p: the first conv sees p x p patches folded into channels and the last conv's p^2 C
    channels unfold back (sde_lib.fold_patches). The output has the shape of x (2C channels with
    config.model.learned_variance), in float32; `get_score_fn` turns it into a score.
    """

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x, time_cond, labels=None, train: bool = False, control=None, concat=None):
        m = self.config.model
        act = layers.get_act(self.config)
        nf, ch_mult = m.nf, tuple(m.ch_mult)
        groups, resblock = layers.norm_groups(self.config), _resblock(self.config)

        temb, h, hs = encode(self.config, x, time_cond, labels, train, concat=concat)
        if control is not None:
            hs, h = layers.add_control(hs, h, control)

        for level in reversed(range(len(ch_mult))):
            for _ in range(m.num_res_blocks + 1):
                h = resblock(nf * ch_mult[level])(jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
            if h.shape[1] in m.attn_resolutions:
                h = layers.AttnBlock(norm_groups=groups)(h)
            if level != 0:
                h = layers.Upsample(with_conv=m.resamp_with_conv)(h)
        assert not hs

        h = act(layers.group_norm(h, groups))
        out = layers.conv3x3(h, m.patch_size**2 * layers.output_channels(self.config, x.shape[-1]), init_scale=0.0)
        return sde_lib.unfold_patches(out, m.patch_size).astype(jnp.float32)
