"""CLIP's text transformer (Stable Diffusion's text encoder), with a parameter tree that is a transformers
CLIPTextModel state dict under models.convert's naming rule, and a bag-of-words control encoder.

For token ids w_1..w_L (L = max_position_embeddings, 77; w_1 = bos, then the prompt, eos, pads):

    h_0[i] = E_tok[w_i] + E_pos[i]
    for each layer:   h <- h + Attn_causal(LN_1(h));   h <- h + MLP(LN_2(h))      (pre-LayerNorm residual blocks)
    last_hidden_state = LN_final(h)                                                (B, L, D): SD's conditioning
    pooler_output     = last_hidden_state[eos position]                            (B, D)

Attn_causal is multi-head attention with q/k/v/out projections in which position i sees positions j <= i,
softmax(q k^T / sqrt(d_head)) v; MLP(x) = fc2(act(fc1(x))) with act = quick_gelu (x sigmoid(1.702 x), CLIP
and SD 1.x) or gelu (OpenCLIP, SD 2.x), as config.json's hidden_act says.

The eos position follows transformers' current rule: when every row's largest id is 49407 (CLIP's
<|endoftext|>, the legacy configs that state eos_token_id = 2), argmax(input_ids) (its first occurrence);
otherwise the first position equal to config's eos_token_id (pad may equal eos, so "first" matters).

Submodules are named after transformers' attributes ('embeddings/token_embedding', 'encoder/layers_0/
self_attn/q_proj', 'mlp/fc1', 'final_layer_norm'), so `from_pretrained` is models.convert.torch_to_flax.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.convert import ConversionError, read_safetensors, torch_to_flax

#: CLIP's <|endoftext|> id: the largest id of its 49,408-token vocabulary (transformers' legacy pooling test).
LEGACY_EOT_ID = 49407

ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """transformers' CLIPTextConfig fields that shape the network (defaults: transformers' own, CLIP ViT-B/32)."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    bos_token_id: int = 49406
    eos_token_id: int = 49407
    pad_token_id: int = 1

    def __post_init__(self):
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; use one of {sorted(ACTIVATIONS)}.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                             f"{self.num_attention_heads}.")

    @classmethod
    def from_dict(cls, d: dict) -> "CLIPTextConfig":
        """The fields of a config.json dict (a full CLIP model's: its 'text_config'); other keys are ignored."""
        d = d.get("text_config") or d
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if d.get(f.name) is not None})


class TextOutput(NamedTuple):
    last_hidden_state: jax.Array  # (B, L, D)
    pooler_output: jax.Array  # (B, D)


def eos_positions(input_ids: jax.Array, eos_token_id: int) -> jax.Array:
    """(B,) index of each row's end-of-text token, by transformers' rule (module docstring)."""
    legacy = jnp.all(jnp.max(input_ids, axis=-1) == LEGACY_EOT_ID)
    return jnp.where(legacy, jnp.argmax(input_ids, axis=-1), jnp.argmax(input_ids == eos_token_id, axis=-1))


def gather_positions(x: jax.Array, positions: jax.Array) -> jax.Array:
    """x[b, positions[b]] for x of shape (B, L, D)."""
    return jnp.take_along_axis(x, positions[:, None, None], axis=1)[:, 0]


class CLIPTextEmbeddings(nn.Module):
    """h_0[i] = E_tok[w_i] (+ E_pos[i] when max_positions > 0; 0: no positions, the bag-of-words encoder)."""

    vocab_size: int
    width: int
    max_positions: int

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        init = nn.initializers.normal(0.02)  # transformers' initializer_range
        h = nn.Embed(self.vocab_size, self.width, embedding_init=init, name="token_embedding")(input_ids)
        if self.max_positions:
            if input_ids.shape[-1] > self.max_positions:
                raise ValueError(f"{input_ids.shape[-1]} tokens exceed max_position_embeddings {self.max_positions}.")
            pos = nn.Embed(self.max_positions, self.width, embedding_init=init, name="position_embedding")
            h = h + pos(jnp.arange(input_ids.shape[-1]))
        return h


class CLIPAttention(nn.Module):
    """Causal multi-head self-attention: out_proj(softmax(q k^T / sqrt(d_head) + causal mask) v), per head."""

    heads: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, length, width = x.shape
        split = lambda name: nn.Dense(width, name=name)(x).reshape(b, length, self.heads, width // self.heads)
        out = jax.nn.dot_product_attention(split("q_proj"), split("k_proj"), split("v_proj"), is_causal=True)
        return nn.Dense(width, name="out_proj")(out.reshape(b, length, width))


class CLIPMLP(nn.Module):
    """fc2(act(fc1(x)))."""

    hidden: int
    act: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = ACTIVATIONS[self.act](nn.Dense(self.hidden, name="fc1")(x))
        return nn.Dense(x.shape[-1], name="fc2")(h)


class CLIPEncoderLayer(nn.Module):
    """h + Attn(LN_1(h)), then h + MLP(LN_2(h))."""

    config: CLIPTextConfig

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        c = self.config
        h = h + CLIPAttention(c.num_attention_heads, name="self_attn")(
            nn.LayerNorm(epsilon=c.layer_norm_eps, name="layer_norm1")(h))
        return h + CLIPMLP(c.intermediate_size, c.hidden_act, name="mlp")(
            nn.LayerNorm(epsilon=c.layer_norm_eps, name="layer_norm2")(h))


class CLIPEncoder(nn.Module):
    config: CLIPTextConfig

    def setup(self):
        self.layers = [CLIPEncoderLayer(self.config) for _ in range(self.config.num_hidden_layers)]

    def __call__(self, h: jax.Array) -> jax.Array:
        for layer in self.layers:
            h = layer(h)
        return h


class CLIPTextTransformer(nn.Module):
    """input_ids int (B, L), L <= max_position_embeddings -> TextOutput(last_hidden_state, pooler_output)."""

    config: CLIPTextConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> TextOutput:
        c = self.config
        h = CLIPTextEmbeddings(c.vocab_size, c.hidden_size, c.max_position_embeddings, name="embeddings")(input_ids)
        h = CLIPEncoder(c, name="encoder")(h)
        h = nn.LayerNorm(epsilon=c.layer_norm_eps, name="final_layer_norm")(h)
        return TextOutput(h, gather_positions(h, eos_positions(input_ids, c.eos_token_id)))


class BagOfWordsText(nn.Module):
    """The order-blind control: token embeddings without positions or attention, pooled by their mean over
    the prompt, bos through eos: pooler_output = (1 / (e + 1)) sum_{i <= e} E_tok[w_i], e = eos position.
    last_hidden_state is the (position-free) token embeddings themselves."""

    config: CLIPTextConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> TextOutput:
        c = self.config
        h = CLIPTextEmbeddings(c.vocab_size, c.hidden_size, 0, name="embeddings")(input_ids)
        eos = eos_positions(input_ids, c.eos_token_id)
        mask = (jnp.arange(input_ids.shape[-1])[None, :] <= eos[:, None]).astype(h.dtype)
        return TextOutput(h, jnp.einsum("bl,bld->bd", mask, h) / jnp.sum(mask, axis=1, keepdims=True))


def from_pretrained(folder: str) -> tuple[CLIPTextTransformer, dict]:
    """(module, params) from a transformers CLIPTextModel folder (config.json + model.safetensors), e.g. a
    Stable Diffusion checkpoint's text_encoder/. Keys may carry transformers' 'text_model.' prefix (a
    CLIPTextModel or a full CLIPModel's text half); the position_ids buffer and a CLIPModel's vision half
    and projections are ignored. Apply as module.apply({'params': params}, input_ids)."""
    if not os.path.isdir(folder):
        raise ConversionError(f"Text encoder folder {folder} does not exist; give a folder holding the "
                              f"transformers CLIPTextModel files config.json and model.safetensors.")
    config_path, weights_path = os.path.join(folder, "config.json"), os.path.join(folder, "model.safetensors")
    try:
        with open(config_path) as f:
            config = CLIPTextConfig.from_dict(json.load(f))
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise ConversionError(f"Cannot read the text encoder config {config_path}: {err}.") from None
    if not os.path.isfile(weights_path) and os.path.isfile(os.path.join(folder, "pytorch_model.bin")):
        raise ConversionError(f"{folder} holds pytorch_model.bin but no model.safetensors; re-save it with "
                              f"save_pretrained(..., safe_serialization=True) where torch is installed.")
    tensors = {k.removeprefix("text_model."): v for k, v in read_safetensors(weights_path).items()}
    module = CLIPTextTransformer(config)
    target = jax.eval_shape(module.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, config.max_position_embeddings), jnp.int32))["params"]
    params = torch_to_flax(tensors, target, source=weights_path,
                           ignore=r"position_ids$|^(vision_model|visual_projection|text_projection|logit_scale)")
    return module, params
