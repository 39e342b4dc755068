"""DDIM (Song, Meng & Ermon 2021, eq. 12), written on any SDE's (alpha, sigma).

One step from s = t_i to t = t_{i+1} < s, with s = score_fn(x, s):

    x0_hat  = (x + sigma_s^2 s) / alpha_s            (Tweedie)
    eps_hat = -sigma_s s
    c       = eta (sigma_t / sigma_s) sqrt(sigma_s^2 - (alpha_s / alpha_t)^2 sigma_t^2)
    x_t     = alpha_t x0_hat + sqrt(sigma_t^2 - c^2) eps_hat + c z,   z ~ N(0, I).

c^2 is eta^2 times the variance of the forward posterior q(x_t | x_s, x_0), so
eta = 0 is the deterministic DDIM (a first-order solver of the probability-flow
ODE) and eta = 1 is ancestral (DDPM-like) sampling. For VP, alpha^2 + sigma^2 = 1
and this is DDIM's sigma_t(eta) exactly; for VE (alpha = 1) it is its VE form.

A learned-variance VP model (variance_fn, models.get_variance_fn) replaces the posterior variance by its own:
c = eta sqrt(Sigma_theta), log Sigma_theta = v log beta + (1 - v) log beta~ on the step's bounds
(common.step_log_variances; beta~ is the posterior variance above, so v = 0 is the fixed-variance step), and
sqrt(sigma_t^2 - c^2) is clipped at 0.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from samplers.common import (check_variance_fn, draw_prior, final_denoise, learned_std, resolve_steps,
                             step_log_variances, uniform_time_grid)
from samplers.registry import register_sampler


@register_sampler("ddim")
def get_ddim_sampler(sde, shape, eta=0.0, num_steps=None, eps=None, denoise=True):
    """sampler(rng, score_fn, variance_fn=None) -> (x, nfe): DDIM on the uniform grid T = t_0 > ... > t_n = eps,
    with the learned variance of variance_fn(x, t) -> v when given (eta > 0).

    nfe = num_steps (+1 for the final Tweedie denoise).
    """
    num_steps, eps = resolve_steps(sde, num_steps, eps)
    if not eta >= 0.0:
        raise ValueError(f"DDIM needs eta >= 0 (0: deterministic, 1: ancestral), got {eta}.")

    def sampler(rng, score_fn, variance_fn=None):
        check_variance_fn(sde, variance_fn)
        ts = uniform_time_grid(sde, num_steps, eps)
        x, rng = draw_prior(sde, rng, shape)

        def body(i, carry):
            rng, x = carry
            rng, step_rng = jax.random.split(rng)
            (alpha_s, sigma_s), (alpha_t, sigma_t) = sde.marginal_coeffs(ts[i]), sde.marginal_coeffs(ts[i + 1])
            score = score_fn(x, jnp.full((shape[0],), ts[i]))
            x0 = (x + sigma_s**2 * score) / alpha_s
            forward_var = jnp.maximum(sigma_s**2 - (alpha_s / alpha_t) ** 2 * sigma_t**2, 0.0)
            if variance_fn is not None and eta > 0:
                c = eta * learned_std(variance_fn(x, jnp.full((shape[0],), ts[i])),
                                      *step_log_variances(alpha_s, sigma_s, alpha_t, sigma_t))
            else:
                c = eta * sigma_t / sigma_s * jnp.sqrt(forward_var)
            x = alpha_t * x0 - jnp.sqrt(jnp.maximum(sigma_t**2 - c**2, 0.0)) * sigma_s * score
            if eta > 0:
                x = x + c * jax.random.normal(step_rng, shape)
            return rng, x

        _, x = jax.lax.fori_loop(0, num_steps, body, (rng, x))
        x, extra = final_denoise(sde, score_fn, x, eps, denoise)
        return x, num_steps + extra

    return sampler
