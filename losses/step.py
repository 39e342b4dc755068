"""jit-able train and eval steps: step_fn(state, batch) -> (state, loss)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import models
from losses.objectives import score_matching_loss
from losses.state import TrainState


def drop_labels(rng: jax.Array, labels: jax.Array, num_classes: int, rate: float) -> jax.Array:
    """Replace each label by the null label `num_classes` with probability `rate` (classifier-free guidance
    training: one network learns both s(x, t | y) and the unconditional s(x, t))."""
    return jnp.where(jax.random.uniform(rng, labels.shape) < rate, num_classes, labels)


def get_step_fn(sde, model, *, train: bool, optimizer: optax.GradientTransformation | None = None,
                scaler=lambda x: x, ema_rate: float = 0.9999, continuous: bool = True,
                reduce_mean: bool = False, likelihood_weighting: bool = False, eps: float = 1e-5,
                num_classes: int = 0, label_dropout: float = 0.0):
    """A step on one batch {'image': (B, H, W, C) in [0, 1], 'label': (B,)}.

    train=True: one optimizer step on the denoising score-matching loss, then
    ema <- ema_rate * ema + (1 - ema_rate) * params. train=False: the loss of
    the EMA parameters, state unchanged but for the rng. With num_classes > 0
    the model is conditioned on the batch's labels, of which a fraction
    label_dropout is replaced by the null label during training.

    Non-finite guard (train=True): a step whose loss or any gradient is NaN/inf keeps
    params, EMA and optimizer state as they were (step and rng still advance) and
    reports its loss as NaN, so a NaN in the returned losses marks exactly the
    skipped steps and the state never holds a non-finite update. The check runs on
    the device; the caller decides when to look at the losses.
    """
    if train and optimizer is None:
        raise ValueError("get_step_fn(train=True) needs an optimizer.")

    def loss_fn(params, model_state, rng, x0, labels):
        dropout_rng, loss_rng = jax.random.split(rng)
        score_fn = models.get_score_fn(sde, model, {"params": params, **model_state}, train=train,
                                       continuous=continuous, rng=dropout_rng, labels=labels)
        return score_matching_loss(loss_rng, score_fn, x0, sde, continuous=continuous, reduce_mean=reduce_mean,
                                   likelihood_weighting=likelihood_weighting, eps=eps)

    def step_fn(state: TrainState, batch) -> tuple[TrainState, jax.Array]:
        rng, step_rng, label_rng = jax.random.split(state.rng, 3)
        x0 = scaler(batch["image"])
        labels = batch["label"] if num_classes > 0 else None
        if not train:
            return state.replace(rng=rng), loss_fn(state.ema_params, state.model_state, step_rng, x0, labels)
        if labels is not None and label_dropout > 0:
            labels = drop_labels(label_rng, labels, num_classes, label_dropout)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, state.model_state, step_rng, x0, labels)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = jax.tree_util.tree_map(lambda e, p: ema_rate * e + (1.0 - ema_rate) * p, state.ema_params, params)
        # One reduction (per-leaf isfinite checks doubled the compile time); a squared norm beyond float range
        # counts as non-finite too: such a step would wreck the state anyway. lax.cond, not jnp.where: a select
        # fuses into the update kernels and changed their rounding from one program to another (fused and
        # single steps then differed by 2e-7 in a near-zero bias); the cond leaves them alone.
        finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree_utils.tree_norm(grads))
        params, ema_params, opt_state = jax.lax.cond(finite, lambda: (params, ema_params, opt_state),
                                                     lambda: (state.params, state.ema_params, state.opt_state))
        return state.replace(step=state.step + 1, params=params, ema_params=ema_params, opt_state=opt_state,
                             rng=rng), jnp.where(finite, loss, jnp.nan)

    return step_fn


def step_fn_from_config(config, sde, model, *, train: bool, optimizer=None, scaler=lambda x: x):
    """get_step_fn with its options read from config.training / config.model."""
    t = config.training
    return get_step_fn(sde, model, train=train, optimizer=optimizer, scaler=scaler, ema_rate=config.model.ema_rate,
                       continuous=t.continuous, reduce_mean=t.reduce_mean, likelihood_weighting=t.likelihood_weighting,
                       num_classes=config.model.num_classes, label_dropout=t.label_dropout)
