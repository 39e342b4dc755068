"""Optimizer from config.optim: Adam(W) with linear warmup and global-norm gradient clipping."""
from __future__ import annotations

import jax.numpy as jnp
import optax


def learning_rate_schedule(config):
    """lr(step) = optim.lr * min((step + 1) / optim.warmup, 1)  (constant lr when warmup == 0)."""
    o = config.optim
    if o.warmup <= 0:
        return lambda step: jnp.asarray(o.lr, jnp.float32)
    return lambda step: o.lr * jnp.minimum((step + 1) / o.warmup, 1.0)


def get_optimizer(config) -> optax.GradientTransformation:
    o = config.optim
    if o.optimizer.lower() not in ("adam", "adamw"):
        raise ValueError(f"Unknown config.optim.optimizer {o.optimizer!r}; choose 'Adam' or 'AdamW'.")
    adam = optax.adamw(learning_rate_schedule(config), b1=o.beta1, b2=0.999, eps=o.eps, weight_decay=o.weight_decay)
    if o.grad_clip >= 0:
        return optax.chain(optax.clip_by_global_norm(o.grad_clip), adam)
    return adam
