"""Multi-head attention and the spatial transformer of Stable Diffusion's U-Net (diffusers' `Attention`,
`FeedForward` with GEGLU, `BasicTransformerBlock` and `Transformer2DModel`), named after the diffusers
attributes so that `models.convert.torch_to_flax` loads diffusers weights into them.

Activations are NHWC / (B, L, C). Mixed precision follows models/layers.py: every layer computes in the dtype of
the activation it receives, parameters stay float32, and normalisation and softmax run in float32.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def _layer_norm(x, name: str):
    """LayerNorm over the last axis (eps 1e-5, learnt scale and bias), in float32."""
    return nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name=name)(x).astype(x.dtype)


class Attention(nn.Module):
    """Multi-head (cross-)attention with queries from x and keys / values from `context` (x itself when None):

        Q = x W_q,  K = c W_k,  V = c W_v      (no biases; heads * dim_head columns each)
        head_h = softmax(Q_h K_h^T / sqrt(dim_head) + log M) V_h
        out = concat_h(head_h) W_o + b_o       (W_o back to x's width)

    `mask` (bool, True = may attend) is either a key mask (B, L_c) or broadcastable to (B, heads, L_x, L_c);
    masked keys get zero weight. The product is `jax.nn.dot_product_attention`, so XLA may use a fused kernel;
    its softmax runs in float32 whatever the activation dtype.
    """

    heads: int
    dim_head: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, context=None, mask=None, train: bool = False):
        h = attend(x, context, self.heads, self.dim_head, mask)
        return nn.Dropout(self.dropout)(h, deterministic=not train)


def attend(x, context, heads: int, dim_head: int, mask=None, qkv_bias: bool = False):
    """Attention's computation (its docstring), its projections to_q, to_k, to_v, to_out_0 created in the calling
    module; qkv_bias adds biases to the first three (the autoencoder's attention has them)."""
    context = x if context is None else context.astype(x.dtype)
    inner = heads * dim_head
    split = lambda h: h.reshape(h.shape[:2] + (heads, dim_head))  # noqa: E731
    q, k, v = (split(nn.Dense(inner, use_bias=qkv_bias, dtype=x.dtype, name=f"to_{s}")(y))
               for s, y in (("q", x), ("k", context), ("v", context)))
    if mask is not None and mask.ndim == 2:
        mask = mask[:, None, None, :]
    h = jax.nn.dot_product_attention(q, k, v, mask=None if mask is None else mask.astype(bool))
    return nn.Dense(x.shape[-1], dtype=x.dtype, name="to_out_0")(h.reshape(x.shape[:2] + (inner,)))


class GEGLU(nn.Module):
    """Gated GELU (Shazeer 2020): [a, g] = x W + b split in halves, out = a * GELU(g) (exact GELU)."""

    features: int

    @nn.compact
    def __call__(self, x):
        a, g = jnp.split(nn.Dense(2 * self.features, dtype=x.dtype, name="proj")(x), 2, axis=-1)
        return a * nn.gelu(g, approximate=False)


class FeedForward(nn.Module):
    """The transformer's MLP: out = Dropout(GEGLU_{4C}(x)) W_2 + b_2, back to x's width C."""

    mult: int = 4
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = GEGLU(self.mult * x.shape[-1], name="net_0")(x)
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        return nn.Dense(x.shape[-1], dtype=x.dtype, name="net_2")(h)


class BasicTransformerBlock(nn.Module):
    """Pre-LayerNorm transformer block with self-attention, cross-attention and a GEGLU MLP:

        x = x + attn1(LN1(x))
        x = x + attn2(LN2(x), context)
        x = x + ff(LN3(x))

    With context None, attn2 takes its keys and values from its own input LN2(x), as diffusers' attention does
    (then the cross-attention is a second self-attention, and the context width must equal x's). `mask` masks
    the context's keys (see Attention).
    """

    heads: int
    dim_head: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, context=None, mask=None, train: bool = False):
        attn = lambda name: Attention(self.heads, self.dim_head, self.dropout, name=name)
        x = x + attn("attn1")(_layer_norm(x, "norm1"), train=train)
        x = x + attn("attn2")(_layer_norm(x, "norm2"), context, mask, train)
        return x + FeedForward(dropout=self.dropout, name="ff")(_layer_norm(x, "norm3"), train)


class Transformer2DModel(nn.Module):
    """The spatial transformer: a residual stack of transformer blocks over the H W positions of a feature map,

        h = proj_in(GroupNorm(x))  -> (B, H W, heads dim_head)
        h = block_depth( ... block_1(h, context))
        out = x + proj_out(h)      -> (B, H, W, C)

    GroupNorm has `norm_groups` groups and eps 1e-6; proj_in / proj_out are 1x1 convolutions (SD 1.x) or
    linear maps (SD 2.x, use_linear_projection=True) — the same map on NHWC, kept apart for the parameter
    shapes of the checkpoints. proj_out is zero-initialised, so a fresh block is the identity.
    """

    heads: int
    dim_head: int
    depth: int = 1
    norm_groups: int = 32
    use_linear_projection: bool = False
    dropout: float = 0.0

    def _proj(self, h, features: int, name: str, zero: bool = False):
        init = {"kernel_init": nn.initializers.zeros} if zero else {}
        if self.use_linear_projection:
            return nn.Dense(features, dtype=h.dtype, name=name, **init)(h)
        return nn.Conv(features, (1, 1), dtype=h.dtype, name=name, **init)(h)

    @nn.compact
    def __call__(self, x, context=None, mask=None, train: bool = False):
        B, H, W, C = x.shape
        h = nn.GroupNorm(num_groups=self.norm_groups, epsilon=1e-6, dtype=jnp.float32, name="norm")(x)
        h = self._proj(h.astype(x.dtype), self.heads * self.dim_head, "proj_in").reshape(B, H * W, -1)
        for i in range(self.depth):
            h = BasicTransformerBlock(self.heads, self.dim_head, self.dropout,
                                      name=f"transformer_blocks_{i}")(h, context, mask, train)
        return x + self._proj(h.reshape(B, H, W, -1), C, "proj_out", zero=True)
