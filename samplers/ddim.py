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

With discrete=True the steps run on the SDE's own chain instead (Stable Diffusion's DDIMScheduler), at the
chain steps of diffusers' timestep_spacing, k = 0..n-1:

    'leading'   i_k = (n - 1 - k) floor(N / n) + steps_offset
    'trailing'  i_k = round(N - k N / n) - 1
    'linspace'  i_k = round((n - 1 - k) (N - 1) / (n - 1))

with the score taken at t = sde.step_time(i_k) (where a discrete-time model is fed step i_k) and (alpha, sigma)
the chain's (sqrt(alpha_bar_i), sqrt(1 - alpha_bar_i)). Each step goes from i_k to p_k = i_k - floor(N / n), as
diffusers' step does whatever the spacing (for 'linspace' p_k need not be the next i); a p_k < 0 goes to x0_hat
(alpha_bar = 1) with `denoise`, else to chain step 0 (diffusers' set_alpha_to_one=False). For VP this is

    x_{p_k} = sqrt(alpha_bar_{p_k}) x0_hat + sqrt(1 - alpha_bar_{p_k}) eps_hat    (eta = 0).

A learned-variance VP model (variance_fn, models.get_variance_fn) replaces the posterior variance by its own:
c = eta sqrt(Sigma_theta), log Sigma_theta = v log beta + (1 - v) log beta~ on the step's bounds
(common.step_log_variances; beta~ is the posterior variance above, so v = 0 is the fixed-variance step), and
sqrt(sigma_t^2 - c^2) is clipped at 0.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from samplers.common import (check_variance_fn, draw_prior, final_denoise, learned_std, resolve_steps,
                             step_log_variances, uniform_time_grid)
from samplers.registry import register_sampler
from sde_lib import batch_mul


def ddim_update(x, score, coeffs_s, coeffs_t, eta=0.0, z=None, noise_std=None):
    """One DDIM step (module docstring) from (alpha_s, sigma_s) to (alpha_t, sigma_t), scalars or (B,) each;
    z ~ N(0, I) is needed only for eta > 0. noise_std (B, ...) replaces the posterior's c (a learned variance's
    eta sqrt(Sigma_theta))."""
    (alpha_s, sigma_s), (alpha_t, sigma_t) = coeffs_s, coeffs_t
    x0 = batch_mul(1.0 / alpha_s, x + batch_mul(sigma_s**2, score))
    if noise_std is None:
        forward_var = jnp.maximum(sigma_s**2 - (alpha_s / alpha_t) ** 2 * sigma_t**2, 0.0)
        c = eta * sigma_t / sigma_s * jnp.sqrt(forward_var)
    else:
        c = noise_std
    x = batch_mul(alpha_t, x0) - batch_mul(jnp.sqrt(jnp.maximum(sigma_t**2 - c**2, 0.0)) * sigma_s, score)
    return x if z is None else x + batch_mul(c, z)


#: diffusers' timestep_spacing values (the module docstring's i_k).
SPACINGS = ("leading", "trailing", "linspace")


def chain_steps(sde, num_steps: int, steps_offset: int = 0, spacing: str = "leading") -> np.ndarray:
    """The chain steps i_k, k = 0..n-1, of discrete DDIM with diffusers' `spacing` (module docstring)."""
    n, big_n = num_steps, sde.N
    if spacing not in SPACINGS:
        raise ValueError(f"Discrete DDIM's timestep spacing must be one of {SPACINGS}, got {spacing!r}.")
    if not 1 <= n <= big_n:
        raise ValueError(f"Discrete DDIM needs 1 <= num_steps <= N = {big_n}, got {n}.")
    if spacing == "leading":
        steps = np.arange(n)[::-1] * (big_n // n) + steps_offset
    elif spacing == "trailing":
        steps = np.round(np.arange(big_n, 0, -big_n / n)) - 1
    else:
        steps = np.round(np.linspace(0, big_n - 1, n))[::-1]
    if not 0 <= steps.min() <= steps.max() < big_n:
        raise ValueError(f"Discrete DDIM's steps with steps_offset {steps_offset} leave the chain of N = {big_n}: "
                         f"{int(steps.max())}.")
    return steps.astype(np.int32)


def chain_grid(sde, num_steps: int, steps_offset: int, spacing: str, denoise: bool):
    """(times t_k = step_time(i_k), coefficients of i_k, coefficients of each step's target p_k), k = 0..n-1."""
    steps = chain_steps(sde, num_steps, steps_offset, spacing)
    previous = steps - sde.N // num_steps
    alpha, sigma = sde.discrete_marginal_coeffs(jnp.asarray(steps))
    alpha_p, sigma_p = sde.discrete_marginal_coeffs(jnp.asarray(np.maximum(previous, 0)))
    end = previous < 0
    if denoise:
        alpha_p, sigma_p = jnp.where(end, 1.0, alpha_p), jnp.where(end, 0.0, sigma_p)
    return sde.step_time(jnp.asarray(steps, jnp.float32)), (alpha, sigma), (alpha_p, sigma_p)


@register_sampler("ddim")
def get_ddim_sampler(sde, shape, eta=0.0, num_steps=None, eps=None, denoise=True, discrete=False,
                     steps_offset=0, spacing="leading"):
    """sampler(rng, score_fn, variance_fn=None) -> (x, nfe): DDIM on the uniform grid T = t_0 > ... > t_n = eps,
    or with `discrete` on the SDE's chain (module docstring; eps unused); with the learned variance of
    variance_fn(x, t) -> v when given (eta > 0).

    nfe = num_steps (+1 for the final Tweedie denoise of the continuous grid).
    """
    num_steps, eps = resolve_steps(sde, num_steps, eps)
    if not eta >= 0.0:
        raise ValueError(f"DDIM needs eta >= 0 (0: deterministic, 1: ancestral), got {eta}.")
    if discrete:
        if not sde.has_discrete_chain:
            raise ValueError(f"Discrete DDIM needs an SDE with a discrete chain (VP or VE), not {type(sde).__name__}.")
        times, coeffs, targets = chain_grid(sde, num_steps, steps_offset, spacing, denoise)

        def chain_sampler(rng, score_fn):
            x, rng = draw_prior(sde, rng, shape)

            def body(k, carry):
                rng, x = carry
                rng, step_rng = jax.random.split(rng)
                score = score_fn(x, jnp.full((shape[0],), times[k]))
                z = jax.random.normal(step_rng, shape) if eta > 0 else None
                return rng, ddim_update(x, score, (coeffs[0][k], coeffs[1][k]), (targets[0][k], targets[1][k]),
                                        eta, z)

            return jax.lax.fori_loop(0, num_steps, body, (rng, x))[1], num_steps

        return chain_sampler

    def sampler(rng, score_fn, variance_fn=None):
        check_variance_fn(sde, variance_fn)
        ts = uniform_time_grid(sde, num_steps, eps)
        x, rng = draw_prior(sde, rng, shape)

        def body(i, carry):
            rng, x = carry
            rng, step_rng = jax.random.split(rng)
            (alpha_s, sigma_s), (alpha_t, sigma_t) = sde.marginal_coeffs(ts[i]), sde.marginal_coeffs(ts[i + 1])
            score = score_fn(x, jnp.full((shape[0],), ts[i]))
            z = jax.random.normal(step_rng, shape) if eta > 0 else None
            noise_std = None
            if variance_fn is not None and eta > 0:
                noise_std = eta * learned_std(variance_fn(x, jnp.full((shape[0],), ts[i])),
                                              *step_log_variances(alpha_s, sigma_s, alpha_t, sigma_t))
            return rng, ddim_update(x, score, (alpha_s, sigma_s), (alpha_t, sigma_t), eta, z, noise_std)

        _, x = jax.lax.fori_loop(0, num_steps, body, (rng, x))
        x, extra = final_denoise(sde, score_fn, x, eps, denoise)
        return x, num_steps + extra

    return sampler
