"""The train state every trained component uses, its optimizer, and the one guarded update rule.

    TrainState = (step, params, ema_params, opt_state, model_state, rng): one pytree, saved and restored whole.

`apply_gradients` is the update every train step ends with:

    params' = params + optimizer(grads),   ema' = r_t ema + (1 - r_t) params'

with r_t = ema_rate, or with `ema_warmup` r_t = min(ema_rate, (1 + t) / (10 + t)) at step t (TensorFlow's
ExponentialMovingAverage with num_updates, as LDM's EMA): a short run's EMA then forgets the random
initialisation (0.999^3000 still holds 5% of it; the warmed-up rate holds 0.999^2990 x 10/3000 of the first
steps), while a long run's is the same.

guarded on the device: a step whose loss or gradient norm is NaN/inf keeps params, EMA and optimizer state
(step and rng still advance) and reports its loss as NaN, so training/loss_window.py can stop the run or skip
the step before any checkpoint holds it. Parameters a component does not train (a frozen encoder, a base
U-Net under a ControlNet) are not in this state at all: the loop passes them to the steps beside it.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """step, params, EMA params (None: no EMA), optimizer state, non-parameter model variables, the rng."""

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any
    model_state: Any
    rng: jax.Array

    @property
    def variables(self):
        return {"params": self.params, **self.model_state}

    @property
    def ema_variables(self):
        return {"params": self.ema_params, **self.model_state}


def create_train_state(rng: jax.Array, variables, optimizer: optax.GradientTransformation,
                       ema: bool = True) -> TrainState:
    """Fresh state at step 0 (EMA = params when `ema`) with the rng used for all later randomness."""
    variables = dict(variables)
    params = variables.pop("params")
    ema_params = jax.tree_util.tree_map(jnp.copy, params) if ema else None  # own buffers: steps donate both
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=ema_params,
                      opt_state=optimizer.init(params), model_state=variables, rng=rng)


def ema_decay(step: jax.Array, ema_rate: float, warmup: bool) -> jax.Array:
    """The EMA's r_t at step t: ema_rate, or min(ema_rate, (1 + t) / (10 + t)) with warmup."""
    if not warmup:
        return jnp.asarray(ema_rate, jnp.float32)
    t = step.astype(jnp.float32)
    return jnp.minimum(ema_rate, (1.0 + t) / (10.0 + t))


def apply_gradients(state: TrainState, loss: jax.Array, grads, optimizer: optax.GradientTransformation,
                    rng: jax.Array, ema_rate: float = 0.0, ema_warmup: bool = False) -> tuple[TrainState, jax.Array]:
    """(state after one guarded optimizer step, the loss or NaN for a skipped step); `rng` is the state's next rng."""
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    rate = ema_decay(state.step, ema_rate, ema_warmup)
    ema_params = None if state.ema_params is None else jax.tree_util.tree_map(
        lambda e, p: rate * e + (1.0 - rate) * p, state.ema_params, params)
    # One reduction (per-leaf isfinite checks doubled the compile time); a squared norm beyond float range
    # counts as non-finite too: such a step would wreck the state anyway. lax.cond, not jnp.where: a select
    # fuses into the update kernels and changed their rounding from one program to another (fused and
    # single steps then differed by 2e-7 in a near-zero bias); the cond leaves them alone.
    finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree_utils.tree_norm(grads))
    params, ema_params, opt_state = jax.lax.cond(finite, lambda: (params, ema_params, opt_state),
                                                 lambda: (state.params, state.ema_params, state.opt_state))
    return state.replace(step=state.step + 1, params=params, ema_params=ema_params, opt_state=opt_state,
                         rng=rng), jnp.where(finite, loss, jnp.nan)


def learning_rate_schedule(optim):
    """lr(step) = optim.lr * min((step + 1) / optim.warmup, 1)  (constant lr when warmup == 0)."""
    if optim.warmup <= 0:
        return lambda step: jnp.asarray(optim.lr, jnp.float32)
    return lambda step: optim.lr * jnp.minimum((step + 1) / optim.warmup, 1.0)


def get_optimizer(optim) -> optax.GradientTransformation:
    """Adam(W) with linear warmup and global-norm gradient clipping, from an optim config group
    (fields optimizer, lr, beta1, beta2, eps, weight_decay, warmup, grad_clip)."""
    if optim.optimizer.lower() not in ("adam", "adamw"):
        raise ValueError(f"Unknown config.optim.optimizer {optim.optimizer!r}; choose 'Adam' or 'AdamW'.")
    adam = optax.adamw(learning_rate_schedule(optim), b1=optim.beta1, b2=optim.beta2, eps=optim.eps,
                       weight_decay=optim.weight_decay)
    if optim.grad_clip >= 0:
        return optax.chain(optax.clip_by_global_norm(optim.grad_clip), adam)
    return adam
