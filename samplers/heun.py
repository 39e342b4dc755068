"""The EDM sampler (Karras et al. 2022, Algorithm 2): Heun's 2nd-order method on the probability-flow
ODE in EDM's variables, with optional stochastic churn, on any SDE with t(lambda).

EDM's state and noise level are x_hat = x / alpha(t) and sigma_hat = sigma(t) / alpha(t) = exp(-lambda(t)),
in which the probability-flow ODE is dx_hat / dsigma_hat = (x_hat - D(x_hat; sigma_hat)) / sigma_hat,
D being the Tweedie denoiser. Over the rho-spaced levels sigma_0 > ... > sigma_n (common.edm_time_grid):

    gamma_i  = min(S_churn / n, sqrt(2) - 1) if S_tmin <= sigma_i <= S_tmax else 0
    sigma'   = (1 + gamma_i) sigma_i,   x' = x_i + sqrt(sigma'^2 - sigma_i^2) S_noise z
    d        = (x' - D(x'; sigma')) / sigma'
    x_{i+1}  = x' + (sigma_{i+1} - sigma') d                                  (Euler)
    d'       = (x_{i+1} - D(x_{i+1}; sigma_{i+1})) / sigma_{i+1}
    x_{i+1}  = x' + (sigma_{i+1} - sigma') (d + d') / 2                        (Heun correction)

EDM's last step, an Euler step from sigma_n to 0, is x = D(x_n; sigma_n): our final
Tweedie `denoise`. S_churn = 0 (default) is the deterministic sampler. A churned level
sigma' above sigma(T)/alpha(T) maps to a time slightly beyond T, where every SDE here
(and its score) is still defined.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from samplers.common import denoiser, draw_prior, edm_time_grid, final_denoise, resolve_steps
from samplers.registry import register_sampler


@register_sampler("heun")
def get_heun_sampler(sde, shape, num_steps=None, eps=None, denoise=True, rho=7.0, s_churn=0.0, s_tmin=0.0,
                     s_tmax=float("inf"), s_noise=1.0):
    """sampler(rng, score_fn) -> (x, nfe): EDM Heun from T to eps; nfe = 2 num_steps (+1 to denoise).

    s_tmin / s_tmax bound the EDM noise level sigma(t)/alpha(t) at which churn is applied.
    """
    num_steps, eps = resolve_steps(sde, num_steps, eps)
    if rho <= 0 or s_churn < 0 or s_noise < 0 or s_tmin > s_tmax:
        raise ValueError(f"Heun needs rho > 0, s_churn >= 0, s_noise >= 0 and s_tmin <= s_tmax; got rho={rho}, "
                         f"s_churn={s_churn}, s_noise={s_noise}, s_tmin={s_tmin}, s_tmax={s_tmax}.")
    sde.t_from_log_snr(jnp.float32(0.0))  # fails early for an SDE without the inverse this grid needs
    gamma_max = min(s_churn / num_steps, np.sqrt(2.0) - 1.0)

    def sampler(rng, score_fn):
        ts = edm_time_grid(sde, num_steps, eps, rho)
        sigmas = jnp.exp(-sde.log_snr(ts))

        def d_of(x_hat, t):
            """(x_hat - D) / sigma_hat, the EDM ODE's direction, at x = alpha(t) x_hat."""
            alpha, _ = sde.marginal_coeffs(t)
            x0 = denoiser(sde, score_fn, alpha * x_hat, jnp.full((shape[0],), t))
            return (x_hat - x0) / jnp.exp(-sde.log_snr(t))

        x, rng = draw_prior(sde, rng, shape)
        x_hat = x / sde.marginal_coeffs(jnp.float32(sde.T))[0]

        def body(i, carry):
            rng, x_hat = carry
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            if gamma_max > 0:
                rng, churn_rng = jax.random.split(rng)
                gamma = jnp.where((s_tmin <= sigma) & (sigma <= s_tmax), gamma_max, 0.0)
                sigma_hat = (1.0 + gamma) * sigma
                noise = jnp.sqrt(sigma_hat**2 - sigma**2) * s_noise * jax.random.normal(churn_rng, shape)
                x_hat, t_hat = x_hat + noise, sde.t_from_log_snr(-jnp.log(sigma_hat))
            else:
                sigma_hat, t_hat = sigma, ts[i]
            d = d_of(x_hat, t_hat)
            x_euler = x_hat + (sigma_next - sigma_hat) * d
            d_next = d_of(x_euler, ts[i + 1])
            return rng, x_hat + (sigma_next - sigma_hat) * 0.5 * (d + d_next)

        _, x_hat = jax.lax.fori_loop(0, num_steps, body, (rng, x_hat))
        x = sde.marginal_coeffs(jnp.float32(eps))[0] * x_hat
        x, extra = final_denoise(sde, score_fn, x, eps, denoise)
        return x, 2 * num_steps + extra

    return sampler
