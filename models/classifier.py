"""The domain classifier network: a small CNN p(y | x), or p(y | x_t, t) with time_conditional.

    x in [0, 1] -> 2x - 1 -> 6 x [conv3x3 (+ Dense(temb)) -> GroupNorm -> swish], channels nf, nf, 2nf, 2nf,
    4nf, 4nf, strides 1, 1, 2, 1, 2, 1 -> flatten -> Dense(4nf) -> swish = features -> Dense(K) = logits

With time_conditional=True a sinusoidal embedding of the noise conditioning c(t) enters every stage.
Trained by tasks/classifier.py; its files and uses are evaluation/classifier.py's.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from models.layers import timestep_embedding


class Classifier(nn.Module):
    """images (B, H, W, C) in [0, 1] [, t (B,)] -> {'features': (B, 4nf), 'logits': (B, num_classes)}."""

    num_classes: int
    nf: int = 16
    time_conditional: bool = False

    @nn.compact
    def __call__(self, images, t=None):
        if self.time_conditional == (t is None):
            raise ValueError("A time-conditional Classifier takes (images, t); an unconditional one only images.")
        temb = None
        if self.time_conditional:
            temb = nn.swish(nn.Dense(4 * self.nf)(timestep_embedding(t, self.nf)))
        h = 2.0 * jnp.asarray(images, jnp.float32) - 1.0
        for k, (mult, stride) in enumerate(((1, 1), (1, 1), (2, 2), (2, 1), (4, 2), (4, 1))):
            h = nn.Conv(mult * self.nf, (3, 3), strides=stride, padding="SAME", name=f"conv{k}")(h)
            if temb is not None:
                h = h + nn.Dense(mult * self.nf, name=f"temb{k}")(temb)[:, None, None, :]
            h = nn.swish(nn.GroupNorm(num_groups=min(mult * self.nf // 4, 32), name=f"norm{k}")(h))
        features = nn.swish(nn.Dense(4 * self.nf, name="features")(h.reshape(h.shape[0], -1)))
        return {"features": features, "logits": nn.Dense(self.num_classes, name="logits")(features)}
