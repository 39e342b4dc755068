"""The DDPM U-Net (Ho et al. 2020), as configured by score_sde's `ddpm` configs."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from models import layers
from models.registry import register_model


@register_model("ddpm")
class DDPM(nn.Module):
    """U-Net of residual blocks with self-attention at `attn_resolutions`.

    Called as model(x, time_cond, labels=None, train=False) with x in the model's
    data range (B, H, W, C) and time_cond (B,) the noise conditioning chosen by
    `models.get_score_fn` (a timestep index or 999 t for VP, sigma(t) for VE).
    With config.model.num_classes > 0, labels (B,) add a class embedding to the
    time embedding (None: the null label). The output has the shape of x (2C
    channels with config.model.learned_variance), in float32; `get_score_fn`
    turns it into a score.
    """

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x, time_cond, labels=None, train: bool = False):
        m = self.config.model
        act = layers.get_act(self.config)
        nf, ch_mult = m.nf, tuple(m.ch_mult)
        num_resolutions = len(ch_mult)
        groups = layers.norm_groups(self.config)
        resblock = lambda out_ch=None: layers.ResnetBlockDDPM(act=act, out_ch=out_ch, dropout=m.dropout,
                                                              norm_groups=groups)

        dtype = layers.compute_dtype(self.config)

        temb = None
        if m.conditional:
            temb = layers.embedding_mlp(layers.timestep_embedding(time_cond, nf).astype(dtype), nf * 4, act)
        temb = layers.add_label_embedding(temb, labels, m.num_classes, nf * 4, x.shape[0], dtype)

        h = (x if self.config.data.centered else 2.0 * x - 1.0).astype(dtype)
        hs = [layers.conv3x3(h, nf)]
        for level in range(num_resolutions):
            for _ in range(m.num_res_blocks):
                h = resblock(nf * ch_mult[level])(hs[-1], temb, train)
                if h.shape[1] in m.attn_resolutions:
                    h = layers.AttnBlock(norm_groups=groups)(h)
                hs.append(h)
            if level != num_resolutions - 1:
                hs.append(layers.Downsample(with_conv=m.resamp_with_conv)(hs[-1]))

        h = resblock()(hs[-1], temb, train)
        h = layers.AttnBlock(norm_groups=groups)(h)
        h = resblock()(h, temb, train)

        for level in reversed(range(num_resolutions)):
            for _ in range(m.num_res_blocks + 1):
                h = resblock(nf * ch_mult[level])(jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
            if h.shape[1] in m.attn_resolutions:
                h = layers.AttnBlock(norm_groups=groups)(h)
            if level != 0:
                h = layers.Upsample(with_conv=m.resamp_with_conv)(h)
        assert not hs

        h = act(layers.group_norm(h, groups))
        return layers.conv3x3(h, layers.output_channels(self.config, x.shape[-1]), init_scale=0.0).astype(jnp.float32)
