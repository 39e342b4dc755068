"""What the samplers share: option defaults, the Tweedie denoiser and the fast solvers' time grids.

Every grid runs from t_0 = T down to t_n = eps in n = num_steps steps (n + 1
points, endpoints exact) and is made on the SDE's own time axis, so a trained
model and an analytic score are always called at a time t in [eps, T] with
the (alpha(t), sigma(t)) of `sde.marginal_coeffs`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

import sde_lib
from sde_lib import batch_mul


def resolve_eps(sde: sde_lib.SDE, eps) -> float:
    """eps or sde.sampling_eps (the config's 0 means the SDE's default), checked to lie in (0, T)."""
    eps = float(eps or sde.sampling_eps)
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T={sde.T}), got {eps}.")
    return eps


def resolve_steps(sde: sde_lib.SDE, num_steps, eps) -> tuple[int, float]:
    """(num_steps or sde.N, resolve_eps(sde, eps)), checked."""
    num_steps = int(num_steps or sde.N)
    if num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}.")
    return num_steps, resolve_eps(sde, eps)


def draw_prior(sde: sde_lib.SDE, rng, shape):
    """(x_T, rng for the rest): every sampler draws its prior sample this way, so samplers called with the
    same rng start from the same x_T (deterministic ones can be compared path by path)."""
    rng, prior_rng = jax.random.split(rng)
    return sde.prior_sampling(prior_rng, shape), rng


def denoiser(sde: sde_lib.SDE, score_fn, x, t):
    """Tweedie's formula D(x, t) = E[x_0 | x_t = x] = (x + sigma(t)^2 s(x, t)) / alpha(t); t is (B,).

    EDM's D(x_hat; sigma_hat) on the scaled x_hat = x / alpha is the same quantity.
    """
    alpha, sigma = sde.marginal_coeffs(t)
    return batch_mul(1.0 / alpha, x + batch_mul(sigma**2, score_fn(x, t)))


def final_denoise(sde: sde_lib.SDE, score_fn, x, eps: float, denoise: bool):
    """(x, extra nfe): with denoise, D(x, eps), the noise-free estimate of x_0 from x_eps (one score evaluation)."""
    if not denoise:
        return x, 0
    return denoiser(sde, score_fn, x, jnp.full((x.shape[0],), eps)), 1


def check_variance_fn(sde: sde_lib.SDE, variance_fn) -> None:
    """ValueError for a learned variance on an SDE without the VP chain whose bounds it interpolates."""
    if variance_fn is not None and not isinstance(sde, sde_lib.VPSDE):
        raise ValueError(f"A learned variance (variance_fn) interpolates the VP chain's variances; "
                         f"{type(sde).__name__} has none.")


def step_log_variances(alpha_s, sigma_s, alpha_t, sigma_t):
    """(log beta, log beta~) of the VP step from s to t < s, DDPM's upper and lower reverse variances:

        beta = 1 - alpha_s^2 / alpha_t^2,   beta~ = sigma_t^2 / sigma_s^2 beta,

    the forward step's variance and the posterior q(x_t | x_s, x_0)'s (for a strided step, those of Nichol &
    Dhariwal's respaced chain)."""
    log_beta = jnp.log(-jnp.expm1(2.0 * (jnp.log(alpha_s) - jnp.log(alpha_t))))
    return log_beta, log_beta + 2.0 * (jnp.log(sigma_t) - jnp.log(sigma_s))


def learned_std(v, log_beta, log_beta_tilde):
    """sqrt(Sigma_theta) (B, ...) with log Sigma_theta = v log beta + (1 - v) log beta~ (Nichol & Dhariwal eq. 15),
    v (B, ...) from a variance_fn(x, t) (models.get_variance_fn), the bounds scalars or (B,)."""
    return jnp.exp(0.5 * (batch_mul(log_beta, v) + batch_mul(log_beta_tilde, 1.0 - v)))


def uniform_time_grid(sde: sde_lib.SDE, num_steps: int, eps: float):
    """t_i = T - i (T - eps) / n, i = 0..n (DDIM's uniform spacing; geometric in sigma for VE)."""
    return jnp.linspace(sde.T, eps, num_steps + 1)


def _with_exact_ends(t, sde, eps):
    return t.at[0].set(sde.T).at[-1].set(eps)


def log_snr_time_grid(sde: sde_lib.SDE, num_steps: int, eps: float):
    """t_i = t(lambda_i) with lambda_i uniform from lambda(T) to lambda(eps) (DPM-Solver's 'logSNR' spacing)."""
    lam = jnp.linspace(sde.log_snr(jnp.float32(sde.T)), sde.log_snr(jnp.float32(eps)), num_steps + 1)
    return _with_exact_ends(sde.t_from_log_snr(lam), sde, eps)


def edm_time_grid(sde: sde_lib.SDE, num_steps: int, eps: float, rho: float):
    """t_i = t(sigma_i), sigma_i = (sigma_max^(1/rho) + i/n (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho (EDM eq. 5),

    on EDM's noise level sigma = sigma(t) / alpha(t) = exp(-lambda(t)), from sigma_max = sigma(T) / alpha(T)
    to sigma_min = sigma(eps) / alpha(eps).
    """
    hi, lo = (jnp.exp(-sde.log_snr(jnp.float32(t)) / rho) for t in (sde.T, eps))
    sigmas = (hi + jnp.linspace(0.0, 1.0, num_steps + 1) * (lo - hi)) ** rho
    return _with_exact_ends(sde.t_from_log_snr(-jnp.log(sigmas)), sde, eps)
