"""ControlNet (Zhang et al. 2023) for Stable Diffusion's U-Net, as diffusers' ControlNetModel, and for the
framework's DDPM and NCSN++ / DDPM++ U-Nets (`EncoderControlNet`).

A trainable copy of the U-Net's encoder (conv_in, time embedding, down levels, mid block) reads the noisy latent
plus an embedded condition image c (edges, depth, pose ...) and returns one residual per U-Net skip and one for
the mid block, each through a zero-initialised 1x1 convolution:

    h_0 = conv_in(x) + E(c),   E = controlnet_cond_embedding (stride-2 convs down to the latent size)
    (m, [h_0 .. h_n]) = the encoder's mid output and skips, as in the U-Net
    residual_i = s_i Z_i(h_i),  mid residual = s_{n+1} Z_mid(m)

with s_i the conditioning scale (times 10^(-1 + i / (n + 1)) in guess mode). The U-Net adds them to its skips
and mid-block output (`layers.add_control`); at initialisation every Z is zero, so a fresh ControlNet leaves the
U-Net unchanged. Several ControlNets' residuals are summed (`sum_controls`). `from_base` builds a fresh one on a
trained base of any kind in BASES, its encoder parameters copied by name.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import sde_lib
from models import ddpm, layers, ncsnpp, unet2d_condition
from models.convert import ConversionError, read_diffusers_folder, torch_to_flax
from models.sd_blocks import conv
from models.unet2d_condition import UNetSpec

@dataclasses.dataclass(frozen=True)
class ControlNetSpec:
    """The U-Net encoder's spec plus the condition's: its channels, the hint encoder's widths (one stride-2
    conv per step between them), diffusers' channel order 'bgr' (flip c's channels) and global pooling."""

    unet: UNetSpec
    conditioning_channels: int = 3
    conditioning_embedding_out_channels: tuple = (16, 32, 96, 256)
    bgr: bool = False
    global_pool_conditions: bool = False


class ControlNetConditioningEmbedding(nn.Module):
    """The hint encoder: h = SiLU(conv_in(c)); per step k, h = SiLU(blocks_{2k+1}(SiLU(blocks_2k(h)))) with
    blocks_{2k+1} of stride 2; E(c) = conv_out(h), conv_out zero-initialised."""

    out_channels: int
    block_out_channels: tuple

    @nn.compact
    def __call__(self, c):
        widths = self.block_out_channels
        h = nn.silu(conv(c, widths[0], "conv_in"))
        for k in range(len(widths) - 1):
            h = nn.silu(conv(h, widths[k], f"blocks_{2 * k}"))
            h = nn.silu(conv(h, widths[k + 1], f"blocks_{2 * k + 1}", stride=2))
        return conv(h, self.out_channels, "conv_out", zero=True)


def scale_residuals(down, mid, conditioning_scale=1.0, guess_mode: bool = False, global_pool: bool = False):
    """(s_i down_i, s_{n+1} mid): conditioning_scale is one number or one per output (the n down residuals,
    then mid); guess mode multiplies by logspace(-1, 0, n + 1) = 10^(-1 + i / n); global_pool averages each
    residual over H, W."""
    n = len(down) + 1
    scales = jnp.broadcast_to(jnp.asarray(conditioning_scale, jnp.float32), (n,))
    if guess_mode and not global_pool:
        scales = scales * jnp.logspace(-1.0, 0.0, n)
    out = [r * scales[i].astype(r.dtype) for i, r in enumerate(list(down) + [mid])]
    if global_pool:
        out = [r.mean(axis=(1, 2), keepdims=True) for r in out]
    return out[:-1], out[-1]


def zero_convs(skips, mid, conditioning_scale=1.0, guess_mode: bool = False, global_pool: bool = False):
    """(down, mid) residuals (float32) = scale_residuals(Z_i(skips_i), Z_mid(mid)), Z the zero-initialised 1x1
    convolutions controlnet_down_blocks_i and controlnet_mid_block of the calling compact module."""
    down = [conv(s, s.shape[-1], f"controlnet_down_blocks_{i}", kernel=1, zero=True) for i, s in enumerate(skips)]
    mid = conv(mid, mid.shape[-1], "controlnet_mid_block", kernel=1, zero=True)
    down, mid = scale_residuals(down, mid, conditioning_scale, guess_mode, global_pool)
    return [r.astype(jnp.float32) for r in down], mid.astype(jnp.float32)


def num_outputs(params) -> int:
    """The residuals of a ControlNet with parameters `params`: one per skip, and the mid block's."""
    return sum(name.startswith("controlnet_down_blocks_") for name in params) + 1


def sum_controls(controls):
    """The control of several ControlNets together: their (down, mid) residuals summed elementwise."""
    downs, mids = zip(*controls)
    return [sum(rs) for rs in zip(*downs)], sum(mids)


class ControlNetModel(nn.Module):
    """diffusers' ControlNetModel: model(sample, timesteps, context, cond, conditioning_scale=1.0,
    guess_mode=False, mask=None, train=False) -> (down residuals, mid residual), all NHWC; cond (B, 8h, 8w, C_c)
    for an (B, h, w, C) latent with SD's hint encoder, in [0, 1]."""

    spec: ControlNetSpec

    @nn.compact
    def __call__(self, sample, timesteps, context, cond, conditioning_scale=1.0, guess_mode: bool = False,
                 mask=None, train: bool = False):
        spec, unet = self.spec, self.spec.unet
        dtype = layers.DTYPES[unet.dtype]
        emb = unet2d_condition.embed_time(unet, timesteps, sample.shape[0], dtype)
        cond = (cond[..., ::-1] if spec.bgr else cond).astype(dtype)
        hint = ControlNetConditioningEmbedding(unet.block_out_channels[0], spec.conditioning_embedding_out_channels,
                                               name="controlnet_cond_embedding")(cond)
        x = (2.0 * sample - 1.0 if unet.center_input_sample else sample).astype(dtype)
        context = unet2d_condition.null_context(unet, x.shape[0], dtype) if context is None else context.astype(dtype)
        h, skips = unet2d_condition.encode(unet, x, emb, context, mask, train, hint=hint)
        return zero_convs(skips, h, conditioning_scale, guess_mode, spec.global_pool_conditions)


#: The encoder (time embedding, input conv, down path, middle) of each framework U-Net, called inside a compact
#: module: encode(config, x, time_cond, labels, train, hint) -> (temb, mid, skips).
ENCODERS = {"ddpm": ddpm.encode, "ncsnpp": ncsnpp.encode}


class EncoderControlNet(nn.Module):
    """ControlNet on a framework U-Net (config.model.name in ENCODERS), its encoder called with the U-Net's own
    module names: model(x, time_cond, context, cond, conditioning_scale=1.0, guess_mode=False, train=False,
    labels=None) -> (down residuals, mid residual), with h_0 = conv_in(P(x)) + E(P(c)) (E: `conditioning_embedding`
    stride-2 steps, so cond is (B, 2^k H, 2^k W, C_c) for k = len(embedding_channels) - 1; P folds the U-Net's
    config.model.patch_size^2 patches into channels, sde_lib.fold_patches, the same fold for x and c). There is no
    context: it is an argument only to share ControlNetModel's signature, and must be None."""

    config: ml_collections.ConfigDict
    conditioning_channels: int = 1
    embedding_channels: tuple = (16,)

    @nn.compact
    def __call__(self, x, time_cond, context, cond, conditioning_scale=1.0, guess_mode: bool = False,
                 train: bool = False, labels=None):
        if context is not None:
            raise ValueError(f"A {self.config.model.name!r} ControlNet takes no context (prompts).")
        cond = sde_lib.fold_patches(cond.astype(layers.compute_dtype(self.config)), self.config.model.patch_size)
        hint = ControlNetConditioningEmbedding(self.config.model.nf, self.embedding_channels,
                                               name="controlnet_cond_embedding")(cond)
        _, mid, skips = ENCODERS[self.config.model.name](self.config, x, time_cond, labels, train, hint=hint)
        return zero_convs(skips, mid, conditioning_scale, guess_mode)


def param_shapes(model: ControlNetModel):
    """The parameter tree of `model` (ShapeDtypeStructs, nothing computed)."""
    spec = model.spec
    s = 2 ** (len(spec.unet.block_out_channels) - 1)
    c = s * 2 ** (len(spec.conditioning_embedding_out_channels) - 1)
    x = jnp.zeros((1, s, s, spec.unet.in_channels))
    cond = jnp.zeros((1, c, c, spec.conditioning_channels))
    context = jnp.zeros((1, 1, spec.unet.cross_attention_dim))
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, 0, context, cond))["params"]


def _fresh(target, base_params, hint_channels: int, embedding_channels: tuple, conditioning_channels: int,
           rng, kind: str):
    """A fresh ControlNet's parameters of tree `target`: every name it shares with the base (its encoder) copied
    from `base_params`; the hint encoder controlnet_cond_embedding freshly initialised (from `rng`) with a zero
    conv_out; every other controlnet_* (the zero convs) zero. Its residuals are exactly zero."""
    hint = ControlNetConditioningEmbedding(hint_channels, tuple(embedding_channels))
    c = jnp.zeros((1, 2 ** (len(embedding_channels) - 1), 1, conditioning_channels))
    params = {}
    for name, shapes in target.items():
        if name == "controlnet_cond_embedding":
            params[name] = hint.init(jax.random.PRNGKey(0) if rng is None else rng, c)["params"]
        elif name.startswith("controlnet_"):
            params[name] = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        elif name not in base_params:
            raise ValueError(f"The base's parameters have no {name!r}; pass a {kind}'s parameters.")
        else:
            params[name] = jax.tree.map(jnp.array, base_params[name])
    if jax.tree.map(np.shape, params) != jax.tree.map(np.shape, target):
        raise ValueError(f"The base's parameters do not match this {kind}'s encoder.")
    return params


def from_unet(unet_spec: UNetSpec, unet_params, rng=None, conditioning_channels: int = 3,
              conditioning_embedding_out_channels: tuple = (16, 32, 96, 256)):
    """(ControlNetModel, params) of a fresh ControlNet on a U-Net: conv_in, time_embedding, the down levels and
    the mid block copied from `unet_params`, the rest fresh (`_fresh`)."""
    spec = ControlNetSpec(unet_spec, conditioning_channels, tuple(conditioning_embedding_out_channels))
    model = ControlNetModel(spec)
    return model, _fresh(param_shapes(model), unet_params, unet_spec.block_out_channels[0],
                         spec.conditioning_embedding_out_channels, conditioning_channels, rng,
                         "UNet2DConditionModel")


def from_encoder(config: ml_collections.ConfigDict, base_params, rng=None, conditioning_channels: int = 1,
                 embedding_channels: tuple = (16,)):
    """(EncoderControlNet, params) of a fresh ControlNet on a framework U-Net of `config` (config.model.name in
    ENCODERS): its time embedding, input conv, down path and middle copied from `base_params`, the rest fresh."""
    model = EncoderControlNet(config, conditioning_channels, tuple(embedding_channels))
    size, s = config.data.image_size, 2 ** (len(embedding_channels) - 1)
    x = jnp.zeros((1, size, size, config.data.num_channels))
    cond = jnp.zeros((1, s * size, s * size, conditioning_channels))
    target = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, jnp.zeros(1), None, cond))["params"]
    return model, _fresh(target, base_params, config.model.nf, tuple(embedding_channels),
                         conditioning_channels * config.model.patch_size**2, rng, repr(config.model.name))


#: The bases a ControlNet is built on, by config.model.name: builder(config, base_params, rng, conditioning
#: channels, hint encoder widths) -> (ControlNet, fresh params).
BASES = {"unet2d_condition": lambda config, *args: from_unet(unet2d_condition.spec_from_config(config), *args),
         **{name: from_encoder for name in ENCODERS}}


def from_base(config: ml_collections.ConfigDict, base_params, rng=None, conditioning_channels: int = 1,
              embedding_channels: tuple = (16,)):
    """(ControlNet, params) of a fresh ControlNet on the trained base network of `config` (see BASES)."""
    if config.model.name not in BASES:
        raise ValueError(f"No ControlNet for config.model.name={config.model.name!r}; the bases are {sorted(BASES)}.")
    return BASES[config.model.name](config, base_params, rng, conditioning_channels, tuple(embedding_channels))


def spec_from_config(config: ml_collections.ConfigDict) -> ControlNetSpec:
    """The ControlNetSpec of a framework config: the U-Net's (unet2d_condition.spec_from_config) with
    config.model.conditioning_channels (default 3) and conditioning_embedding_out_channels (16, 32, 96, 256)."""
    m = config.model
    return ControlNetSpec(unet2d_condition.spec_from_config(config), m.get("conditioning_channels", 3),
                          tuple(m.get("conditioning_embedding_out_channels", (16, 32, 96, 256))))


def from_diffusers(folder: str, dtype: str = "float32"):
    """(ControlNetModel, params) from a diffusers `controlnet` folder (config.json + safetensors weights);
    ConversionError in one sentence when a file is missing, the class is wrong or a tensor does not match."""
    cfg, tensors = read_diffusers_folder(folder, "ControlNetModel")
    where = f"{folder}/config.json"
    try:
        order = cfg.get("controlnet_conditioning_channel_order", "rgb")
        if order not in ("rgb", "bgr"):
            raise ValueError(f"{where}: controlnet_conditioning_channel_order={order!r} is not 'rgb' or 'bgr'.")
        unet = dataclasses.replace(unet2d_condition.spec_from_diffusers(cfg, where), dtype=dtype)
        spec = ControlNetSpec(unet, cfg.get("conditioning_channels", 3),
                              tuple(cfg.get("conditioning_embedding_out_channels", (16, 32, 96, 256))),
                              order == "bgr", bool(cfg.get("global_pool_conditions", False)))
    except ValueError as err:
        raise ConversionError(str(err)) from None
    model = ControlNetModel(spec)
    return model, torch_to_flax(tensors, param_shapes(model), source=folder)


@dataclasses.dataclass(frozen=True)
class Controlled:
    """A score network under a ControlNet, with the network interface `models.get_score_fn` calls:

        apply(variables, x, c, labels, train, rngs, hint=c_img, base=base_variables, context=None)
            = base_model(x, c, labels, context, control=ControlNet(x, c, context, c_img, s, labels))

    `variables` are the ControlNet's, `base` the (frozen) base network's; s = conditioning_scale (one number or
    one per output); labels and context go to whichever network is given them (None: not passed). The base's
    collections other than 'params' (NCSN++'s fixed Fourier features) serve the ControlNet's copy of its encoder
    too. The score function thus closes over the condition image and the frozen base. A batch x of k copies of
    the hint's, such as classifier-free guidance's [x, x] with labels [y, null], takes the hint in every copy
    (c_img, c_img, ...), as diffusers' ControlNet pipeline does outside guess mode."""

    base_model: nn.Module
    controlnet: nn.Module
    conditioning_scale: float | tuple = 1.0

    @property
    def config(self):
        return self.base_model.config

    def apply(self, variables, x, time_cond, labels=None, train: bool = False, rngs=None, *, hint, base,
              context=None):
        copies, rest = divmod(x.shape[0], hint.shape[0])
        if rest:
            raise ValueError(f"A batch of {x.shape[0]} is not a whole number of copies of the {hint.shape[0]} hints.")
        hint = jnp.concatenate([hint] * copies) if copies > 1 else hint
        given = {} if labels is None else {"labels": labels}
        fixed = {name: value for name, value in base.items() if name != "params"}
        control = self.controlnet.apply({**fixed, **variables}, x, time_cond, context, hint, self.conditioning_scale,
                                        train=train, rngs=rngs, **given)
        given.update({} if context is None else {"context": context})
        return self.base_model.apply(base, x, time_cond, train=train, rngs=rngs, control=control, **given)
