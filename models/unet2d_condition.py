"""Stable Diffusion's U-Net (diffusers' UNet2DConditionModel): its spec, the network, a reader of diffusers
folders, and the score network 'unet2d_condition' of this framework.

    emb = time_embedding(e(t))                                 e: sinusoidal, flip_sin_to_cos / freq_shift
    h = conv_in(x);  skips = [h]
    down level l: h = attn(resnet(h, emb), context) per layer (skips += h), then a stride-2 conv (skips += h)
    h = mid_block(h) [+ ControlNet's mid residual];  skips_i [+ ControlNet's residual_i]
    up level l:   h = attn(resnet([h, skips.pop()], emb), context) per layer, then nearest 2x + conv
    out = conv_out(SiLU(GroupNorm(h)))

The parameter tree is diffusers' state dict under models/convert.py's naming rule, so `from_diffusers(folder)`
loads a published SD 1.x / 2.x U-Net. Inputs are NHWC here (diffusers' are NCHW).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from models import layers
from models.convert import ConversionError, read_diffusers_folder, torch_to_flax
from models.registry import register_model
from models.sd_blocks import DownBlock2D, TimestepEmbedding, UNetMidBlock2DCrossAttn, UpBlock2D, conv, group_norm

CROSS_ATTN_TYPES = {"CrossAttnDownBlock2D": True, "DownBlock2D": False, "CrossAttnUpBlock2D": True,
                    "UpBlock2D": False}


@dataclasses.dataclass(frozen=True)
class UNetSpec:
    """The architecture, in diffusers' config terms with per-level tuples. `heads` is the number of attention
    heads per level (diffusers' `num_attention_heads`, or its misnamed `attention_head_dim` when that is null);
    `cross_attention_dim` the width D of the context (B, L, D). `dtype` is the activation dtype. (diffusers'
    upcast_attention needs no field: attention logits and softmax are always float32 here.)"""

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple = (320, 640, 1280, 1280)
    down_block_types: tuple = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    up_block_types: tuple = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    layers_per_block: tuple = (2, 2, 2, 2)
    heads: tuple = (8, 8, 8, 8)
    transformer_layers_per_block: tuple = (1, 1, 1, 1)
    cross_attention_dim: int = 768
    use_linear_projection: bool = False
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    center_input_sample: bool = False
    mid_block_scale_factor: float = 1.0
    downsample_padding: int = 1
    conv_in_kernel: int = 3
    conv_out_kernel: int = 3
    dropout: float = 0.0
    dtype: str = "float32"

    def __post_init__(self):
        n = len(self.block_out_channels)
        for field in ("down_block_types", "layers_per_block", "heads", "transformer_layers_per_block"):
            if len(getattr(self, field)) != n:
                raise ValueError(f"UNetSpec.{field} has {len(getattr(self, field))} entries for {n} levels.")
        if self.up_block_types and len(self.up_block_types) != n:
            raise ValueError(f"UNetSpec.up_block_types has {len(self.up_block_types)} entries for {n} levels.")
        unknown = [t for t in self.down_block_types + self.up_block_types if t not in CROSS_ATTN_TYPES]
        if unknown:
            raise ValueError(f"Unsupported U-Net block type {unknown[0]!r}; supported: {sorted(CROSS_ATTN_TYPES)}.")


# diffusers options this network does not implement, with the values that mean "off".
_OFF = {"act_fn": ("silu",), "addition_embed_type": (None,), "class_embed_type": (None,),
        "num_class_embeds": (None,), "encoder_hid_dim": (None,), "encoder_hid_dim_type": (None,),
        "time_cond_proj_dim": (None,), "time_embedding_type": ("positional",), "time_embedding_dim": (None,),
        "time_embedding_act_fn": (None,), "timestep_post_act": (None,), "resnet_time_scale_shift": ("default",),
        "resnet_skip_time_act": (False,), "resnet_out_scale_factor": (1.0,), "dual_cross_attention": (False,),
        "only_cross_attention": (False,), "mid_block_only_cross_attention": (None, False),
        "attention_type": ("default",), "cross_attention_norm": (None,), "class_embeddings_concat": (False,),
        "reverse_transformer_layers_per_block": (None,), "mid_block_type": ("UNetMidBlock2DCrossAttn",),
        "addition_time_embed_dim": (None,), "projection_class_embeddings_input_dim": (None,)}


def _per_level(value, n: int, name: str, where: str) -> tuple:
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * n
    if len(values) != n or not all(isinstance(v, int) for v in values):
        raise ValueError(f"{where}: {name} must be an int or {n} ints (one per level), not {value!r}.")
    return values


def spec_from_diffusers(cfg: dict, where: str = "config.json") -> UNetSpec:
    """The UNetSpec of a diffusers UNet2DConditionModel / ControlNetModel config dict; a ValueError names the
    first option this implementation does not support."""
    for key, allowed in _OFF.items():
        if cfg.get(key, allowed[0]) in allowed:
            continue
        raise ValueError(f"{where}: {key}={cfg[key]!r} is not supported (only {allowed[0]!r}).")
    n = len(cfg["block_out_channels"])
    heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8)
    if isinstance(cfg.get("cross_attention_dim", 1280), (list, tuple)):
        raise ValueError(f"{where}: a per-level cross_attention_dim is not supported.")
    if cfg.get("norm_num_groups") is None:
        raise ValueError(f"{where}: norm_num_groups null (no output GroupNorm) is not supported.")
    return UNetSpec(
        in_channels=cfg.get("in_channels", 4), out_channels=cfg.get("out_channels", 4),
        block_out_channels=tuple(cfg["block_out_channels"]), down_block_types=tuple(cfg["down_block_types"]),
        up_block_types=tuple(cfg.get("up_block_types", ())),
        layers_per_block=_per_level(cfg.get("layers_per_block", 2), n, "layers_per_block", where),
        heads=_per_level(heads, n, "attention heads", where),
        transformer_layers_per_block=_per_level(cfg.get("transformer_layers_per_block", 1), n,
                                                "transformer_layers_per_block", where),
        cross_attention_dim=cfg.get("cross_attention_dim", 1280),
        use_linear_projection=bool(cfg.get("use_linear_projection", False)),
        norm_num_groups=cfg["norm_num_groups"], norm_eps=cfg.get("norm_eps", 1e-5),
        flip_sin_to_cos=cfg.get("flip_sin_to_cos", True), freq_shift=cfg.get("freq_shift", 0),
        center_input_sample=cfg.get("center_input_sample", False),
        mid_block_scale_factor=cfg.get("mid_block_scale_factor", 1.0),
        downsample_padding=cfg.get("downsample_padding", 1), conv_in_kernel=cfg.get("conv_in_kernel", 3),
        conv_out_kernel=cfg.get("conv_out_kernel", 3), dropout=cfg.get("dropout", 0.0))


def spec_from_config(config: ml_collections.ConfigDict) -> UNetSpec:
    """The UNetSpec of a framework config. Fields of config.model (score_sde's names where they exist):

        nf, ch_mult          level widths nf * ch_mult[l]
        num_res_blocks       resnets per down level (one more per up level)
        attn_resolutions     levels whose resolution image_size / 2^l is listed get cross-attention
        num_heads            attention heads (an int, or one per level; default 8)
        cross_attention_dim  width D of the context (B, L, D) (default 768)
        transformer_depth    transformer blocks per attention (default 1)
        use_linear_projection, norm_num_groups (default 32), dropout, dtype ('float32' / 'bfloat16')

    and config.data.{image_size, num_channels}. The time embedding is SD's (flip_sin_to_cos, freq_shift 0).
    """
    m, n = config.model, len(config.model.ch_mult)
    attn = [config.data.image_size // 2**level in m.attn_resolutions for level in range(n)]
    return UNetSpec(
        in_channels=config.data.num_channels, out_channels=config.data.num_channels,
        block_out_channels=tuple(m.nf * c for c in m.ch_mult),
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        layers_per_block=(m.num_res_blocks,) * n, heads=_per_level(m.get("num_heads", 8), n, "num_heads", "config"),
        transformer_layers_per_block=(m.get("transformer_depth", 1),) * n,
        cross_attention_dim=m.get("cross_attention_dim", 768),
        use_linear_projection=m.get("use_linear_projection", False), norm_num_groups=m.get("norm_num_groups", 32),
        dropout=m.get("dropout", 0.0), dtype=m.get("dtype", "float32"))


def _level(spec: UNetSpec, level: int, attention: bool, num_layers: int) -> dict:
    """The LevelBlock fields of one level."""
    return dict(out_channels=spec.block_out_channels[level], num_layers=num_layers,
                heads=spec.heads[level] if attention else 0,
                transformer_depth=spec.transformer_layers_per_block[level],
                use_linear_projection=spec.use_linear_projection, groups=spec.norm_num_groups, eps=spec.norm_eps,
                dropout=spec.dropout)


def embed_time(spec: UNetSpec, timesteps, batch: int, dtype):
    """emb = time_embedding(e(t)) for (B,) (or scalar) timesteps; e is computed in float32."""
    t = jnp.broadcast_to(jnp.asarray(timesteps), (batch,))
    e = layers.timestep_embedding(t, spec.block_out_channels[0], flip_sin_to_cos=spec.flip_sin_to_cos,
                                  freq_shift=spec.freq_shift)
    return TimestepEmbedding(4 * spec.block_out_channels[0], name="time_embedding")(e.astype(dtype))


def null_context(spec: UNetSpec, batch: int, dtype):
    """The context used when none is given: one zero token, so every cross-attention reduces to its output bias."""
    return jnp.zeros((batch, 1, spec.cross_attention_dim), dtype)


def encode(spec: UNetSpec, x, emb, context, mask=None, train: bool = False, hint=None):
    """conv_in (+ `hint`, ControlNet's embedded condition), the down levels and the mid block (inside the calling
    compact module): returns (mid-block output, skip activations)."""
    h = conv(x, spec.block_out_channels[0], "conv_in", kernel=spec.conv_in_kernel)
    if hint is not None:
        h = h + hint
    skips = [h]
    last = len(spec.block_out_channels) - 1
    for level, kind in enumerate(spec.down_block_types):
        h, level_skips = DownBlock2D(**_level(spec, level, CROSS_ATTN_TYPES[kind], spec.layers_per_block[level]),
                                     add_downsample=level != last, downsample_padding=spec.downsample_padding,
                                     name=f"down_blocks_{level}")(h, emb, context, mask, train)
        skips += level_skips
    h = UNetMidBlock2DCrossAttn(**_level(spec, last, True, 1), output_scale_factor=spec.mid_block_scale_factor,
                                name="mid_block")(h, emb, context, mask, train)
    return h, skips


def unet_forward(spec: UNetSpec, x, timesteps, context=None, control=None, mask=None, train: bool = False,
                 concat=None):
    """The U-Net's output for NHWC x (float32), inside the calling compact module (which holds the parameters).

    `control` = (down residuals, mid residual), as returned by a ControlNet: residual i is added to skip i and
    the mid one to the mid-block output. `mask` (B, L) masks context tokens; context None is `null_context`.
    `concat` (B, H, W, C_c), a condition image, is concatenated to the (centred) input of conv_in
    (layers.concat_input), which then takes in_channels + C_c channels.
    """
    dtype = layers.DTYPES[spec.dtype]
    h = (2.0 * x - 1.0 if spec.center_input_sample else x).astype(dtype)
    context = null_context(spec, x.shape[0], dtype) if context is None else context.astype(dtype)
    emb = embed_time(spec, timesteps, x.shape[0], dtype)
    h, skips = encode(spec, layers.concat_input(h, concat), emb, context, mask, train)
    if control is not None:
        skips, h = layers.add_control(skips, h, control)
    n = len(spec.block_out_channels)
    for i, kind in enumerate(spec.up_block_types):
        level = n - 1 - i
        num_layers = spec.layers_per_block[level] + 1
        level_skips, skips = skips[-num_layers:], skips[:-num_layers]
        h = UpBlock2D(**_level(spec, level, CROSS_ATTN_TYPES[kind], num_layers), add_upsample=level != 0,
                      name=f"up_blocks_{i}")(h, level_skips, emb, context, mask, train,
                                              skips[-1].shape[1:3] if skips else None)
    h = nn.silu(group_norm(h, spec.norm_num_groups, spec.norm_eps, "conv_norm_out"))
    return conv(h, spec.out_channels, "conv_out", kernel=spec.conv_out_kernel).astype(jnp.float32)


class UNet2DConditionModel(nn.Module):
    """diffusers' UNet2DConditionModel: model(sample, timesteps, context, control=None, mask=None, train=False,
    concat=None) with sample (B, H, W, C), timesteps (B,) or scalar, context (B, L, cross_attention_dim); see
    unet_forward. A diffusers folder's in_channels counts conv_in's inputs, concat channels included (9 for SD's
    inpainting U-Net: C + C_c = 4 + 5)."""

    spec: UNetSpec

    @nn.compact
    def __call__(self, sample, timesteps, context=None, control=None, mask=None, train: bool = False, concat=None):
        return unet_forward(self.spec, sample, timesteps, context, control, mask, train, concat)


@register_model("unet2d_condition")
class UNet2DConditionScoreNet(nn.Module):
    """Stable Diffusion's U-Net as a score network of this framework (spec from `spec_from_config`).

    Called as model(x, t, labels=None, train=False, context=None, control=None, concat=None): x (B, H, W, C), t
    the noise conditioning `models.get_score_fn` passes (for SD's discrete VP chain the integer step index),
    context the (B, L, D) encoder hidden states (None: the null context), control a ControlNet's (down, mid)
    residuals, concat a (B, H, W, C_c) condition image (unet_forward). It predicts epsilon (the VP convention),
    in float32. The parameter tree is UNet2DConditionModel's, so
    `from_diffusers` weights load into it. Class labels are not supported (condition through context).
    """

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x, time_cond, labels=None, train: bool = False, context=None, control=None, concat=None):
        if labels is not None:
            raise ValueError("unet2d_condition takes no class labels; condition it through context.")
        return unet_forward(spec_from_config(self.config), x, time_cond, context, control, train=train, concat=concat)


def param_shapes(model: nn.Module, spec: UNetSpec, *inputs):
    """The parameter tree of `model` (ShapeDtypeStructs, nothing computed) for a small input batch."""
    s = 2 ** (len(spec.block_out_channels) - 1)
    x = jnp.zeros((1, s, s, spec.in_channels))
    context = jnp.zeros((1, 1, spec.cross_attention_dim))
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, 0, context, *inputs))["params"]


def from_diffusers(folder: str, dtype: str = "float32"):
    """(UNet2DConditionModel, params) from a diffusers `unet` folder (config.json + safetensors weights);
    apply as model.apply({'params': params}, sample, timesteps, context). Raises ConversionError in one
    sentence when a file is missing, the folder holds another class, or a tensor does not match."""
    cfg, tensors = read_diffusers_folder(folder, "UNet2DConditionModel")
    try:
        spec = dataclasses.replace(spec_from_diffusers(cfg, f"{folder}/config.json"), dtype=dtype)
    except ValueError as err:
        raise ConversionError(str(err)) from None
    model = UNet2DConditionModel(spec)
    return model, torch_to_flax(tensors, param_shapes(model, spec), source=folder)
