"""The score parameterisation: a network's output turned into the plain score_fn(x, t) every sampler takes.

Preconditioning lives here, apart from the networks (as in EDM), and asks the SDE what it needs:

* what the network predicts, `sde.default_prediction` (score_sde's): 'epsilon' for VP / sub-VP, the
  noise eps of x_t = alpha x_0 + sigma eps, so  s(x, t) = -net(x, c(t)) / sigma;  'score' for VE,
  s(x, t) = net(x, c(t)) [/ sigma with config.model.scale_by_sigma];
* the noise conditioning c(t) = `sde.noise_label(t, continuous)` and the (alpha, sigma) the model was
  trained at, `sde.perturbation_coeffs(t, continuous)` (the discrete chain's for a discrete-time model;
  config.model.discrete_labels picks score_sde's labels or this framework's older 'floor_index').
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

import sde_lib
from models.registry import get_model


def init_model(rng: jax.Array, config, model=None):
    """Initial variables of the model named by config (or of `model`), from a batch of one."""
    model = model if model is not None else get_model(config)
    d = config.data
    x = jnp.zeros((1, d.image_size, d.image_size, d.num_channels), jnp.float32)
    t = jnp.zeros((1,), jnp.float32)
    params_rng, dropout_rng = jax.random.split(rng)
    return model.init({"params": params_rng, "dropout": dropout_rng}, x, t, train=False)


def noise_conditioning(sde: sde_lib.SDE, t: jax.Array, continuous: bool) -> tuple[jax.Array, jax.Array]:
    """(c(t), sigma(t)): the network's noise conditioning and the perturbation std at time t."""
    return sde.noise_label(t, continuous), sde.perturbation_coeffs(t, continuous)[1]


def get_score_fn(sde: sde_lib.SDE, model, variables, train: bool = False, continuous: bool = True,
                 rng: jax.Array | None = None, labels: jax.Array | None = None):
    """score_fn(x, t) -> grad_x log p_t(x) estimated by `model` with `variables`.

    `rng` feeds dropout when train=True; `labels` are class labels for a
    class-conditional model (None for an unconditional one).
    """
    if train and rng is None:
        raise ValueError("get_score_fn(train=True) needs an rng for dropout.")
    scale_by_sigma = model.config.model.get("scale_by_sigma", False)
    predicts_score = sde.default_prediction == "score"

    def score_fn(x, t):
        cond, sigma = noise_conditioning(sde, t, continuous)
        out = model.apply(variables, x, cond, labels=labels, train=train,
                          rngs={"dropout": rng} if train else None).astype(jnp.float32)
        if predicts_score:
            return sde_lib.batch_mul(1.0 / sigma, out) if scale_by_sigma else out
        return sde_lib.batch_mul(-1.0 / sigma, out)

    return score_fn
