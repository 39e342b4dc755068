"""CLIP's contrastive objective and retrieval accuracy, as pure functions of a batch of paired embeddings.

For B pairs (x_i, y_i) with image embeddings f_i and text embeddings g_i, u_i = f_i / |f_i|, v_i = g_i / |g_i|
and the learned log-scale s (CLIP initialises it to log(1 / 0.07), temperature 0.07), the logits are

    l_ij = exp(clip(s, 0, log 100)) <u_i, v_j>

and the symmetric InfoNCE loss is the mean cross-entropy of picking the matching pair in each row (image ->
text) and each column (text -> image):

    L = -(1 / 2B) sum_i [ log softmax_j(l_ij)|_{j=i} + log softmax_j(l_ji)|_{j=i} ].

CLIP clamps s to [0, log 100] after each step (the scale never exceeds 100); clamping inside the loss is the
same scale, with no post-step hook.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

LOGIT_SCALE_MAX = math.log(100.0)


def normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / |x| along the last axis."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def clip_logits(image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array) -> jax.Array:
    """(B, B) l_ij = exp(clip(s, 0, log 100)) <u_i, v_j>: row i an image, column j a text."""
    scale = jnp.exp(jnp.clip(logit_scale, 0.0, LOGIT_SCALE_MAX))
    return scale * normalize(image_emb) @ normalize(text_emb).T


def contrastive_loss(image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array) -> jax.Array:
    """The symmetric InfoNCE loss L (scalar) of B paired embeddings (B, E), (B, E)."""
    logits = clip_logits(image_emb, text_emb, logit_scale)
    targets = jnp.arange(logits.shape[0])
    image_to_text = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    text_to_image = optax.softmax_cross_entropy_with_integer_labels(logits.T, targets)
    return 0.5 * (jnp.mean(image_to_text) + jnp.mean(text_to_image))


def retrieval_accuracy(image_emb: jax.Array, text_emb: jax.Array,
                       groups: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Top-1 retrieval accuracy (image -> text, text -> image) by cosine similarity among the B candidates.

    Image i retrieves text argmax_j <u_i, v_j>; it is right when that is text i or, given `groups` (B,) (e.g.
    the caption's class, so that equal captions are interchangeable), a text of the same group. Likewise for
    text j retrieving argmax_i <u_i, v_j>.
    """
    similarity = normalize(image_emb) @ normalize(text_emb).T
    groups = jnp.arange(similarity.shape[0]) if groups is None else groups
    image_to_text = jnp.mean(groups[jnp.argmax(similarity, axis=1)] == groups)
    text_to_image = jnp.mean(groups[jnp.argmax(similarity, axis=0)] == groups)
    return image_to_text, text_to_image


def prefers_caption(image_emb: jax.Array, text_emb: jax.Array, other_emb: jax.Array,
                    margin: float = 1e-6) -> jax.Array:
    """(B,) bool: <u_i, v_i> - <u_i, v'_i> > margin, image i scoring its caption above another one (e.g. the
    order-swapped "a 7 left of a 3" for "a 3 left of a 7"). A tie, as an order-blind text tower gives for a
    swapped caption up to rounding, counts as wrong."""
    u = normalize(image_emb)
    return jnp.sum(u * normalize(text_emb), axis=-1) - jnp.sum(u * normalize(other_emb), axis=-1) > margin
