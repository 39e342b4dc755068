"""The continuous-time variational bound of a VP diffusion written in its log-SNR (Kingma et al. 2021, VDM).

z_t = alpha_t x + sigma_t eps on t in [0, 1], with gamma(t) = -log SNR(t) = log(sigma_t^2 / alpha_t^2) increasing from
gamma(0) = gamma_min to gamma(1) = gamma_max, and alpha_t^2 = sigmoid(-gamma(t)), sigma_t^2 = sigmoid(gamma(t)). As the
number of steps T -> infinity the discrete bound becomes (VDM's continuous-time bound), per example in nats,

    -log p(x) <= KL(q(z_1 | x) || N(0, I)) + E_{q(z_0 | x)}[-log p(x | z_0)] + L_inf(x),
    L_inf(x)  = 1/2 E_{t ~ U(0, 1), eps ~ N(0, I)} [gamma'(t) ||eps - eps_hat(z_t; t)||^2],

with the decoder p(x | z_0) = N(z_0 / alpha_0, sigma_0^2 / alpha_0^2 = e^gamma_min) per element, discretised onto the
8-bit grid of [-1, 1] (vlb.discretized_gaussian_log_likelihood) or continuous. L_inf depends on gamma only through
its endpoints (VDM's invariance result); a learned schedule (MonotoneGamma) between fixed endpoints changes only the
variance of the Monte-Carlo estimate. Bits/dim: the sum / (D ln 2).

An sde_lib.VPSDE model enters through the time change s = eps + (T - eps) t: gamma(t) = -2 sde.log_snr(s)
(vp_sde_gamma) and eps_hat(z, t) = -sigma_s score_fn(z, s).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from losses import vlb

GAMMA_MIN, GAMMA_MAX = -13.3, 5.0  # VDM's CIFAR-10 endpoints


def alpha_sigma(gamma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(alpha, sigma) = (sqrt(sigmoid(-gamma)), sqrt(sigmoid(gamma)))."""
    return jnp.sqrt(jax.nn.sigmoid(-gamma)), jnp.sqrt(jax.nn.sigmoid(gamma))


def linear_gamma(gamma_min: float = GAMMA_MIN, gamma_max: float = GAMMA_MAX) -> Callable:
    """gamma(t) = gamma_min + (gamma_max - gamma_min) t."""
    return lambda t: gamma_min + (gamma_max - gamma_min) * t


def vp_sde_gamma(sde, eps: float = 1e-5) -> Callable:
    """gamma(t) = -2 lambda(eps + (T - eps) t) for an sde_lib.VPSDE, lambda = sde.log_snr = log(alpha / sigma)."""
    return lambda t: -2.0 * sde.log_snr(eps + (sde.T - eps) * t)


def vp_sde_eps_fn(sde, score_fn, eps: float = 1e-5) -> Callable:
    """eps_hat(z, t) = -sigma_s score_fn(z, s), s = eps + (T - eps) t: an sde_lib.VPSDE score model on VDM's t."""
    def eps_fn(z, t):
        s = eps + (sde.T - eps) * t
        return -_per_example(sde.marginal_coeffs(s)[1], z) * score_fn(z, s)
    return eps_fn


def _sum_dims(x):
    return jnp.sum(jnp.reshape(x, (x.shape[0], -1)), axis=-1)


def _per_example(a, like):
    return jnp.reshape(a, a.shape + (1,) * (like.ndim - a.ndim))


def diffusion_loss(gamma_fn: Callable, t: jax.Array, eps: jax.Array, eps_hat: jax.Array) -> jax.Array:
    """1/2 gamma'(t) ||eps - eps_hat||^2 per example (B,), gamma' by forward-mode differentiation of gamma_fn,
    which maps t (B,) to gamma (B,) elementwise."""
    _, dgamma = jax.jvp(gamma_fn, (t,), (jnp.ones_like(t),))
    return 0.5 * dgamma * _sum_dims(jnp.square(eps - eps_hat))


def prior_kl(gamma_1: jax.Array, x: jax.Array) -> jax.Array:
    """KL(N(alpha_1 x, sigma_1^2 I) || N(0, I)) per example (B,), gamma_1 (B,) or scalar."""
    gamma_1 = _per_example(jnp.broadcast_to(gamma_1, x.shape[:1]), x)
    alpha, _ = alpha_sigma(gamma_1)
    return _sum_dims(vlb.normal_kl(alpha * x, jax.nn.log_sigmoid(gamma_1), 0.0, 0.0))


def reconstruction_nll(gamma_0: jax.Array, x: jax.Array, noise: jax.Array, discrete: bool = True) -> jax.Array:
    """-log p(x | z_0) per example (B,) at z_0 = alpha_0 x + sigma_0 noise, p = N(z_0 / alpha_0, e^gamma_0)."""
    gamma_0 = _per_example(jnp.broadcast_to(gamma_0, x.shape[:1]), x)
    alpha, sigma = alpha_sigma(gamma_0)
    mean = (alpha * x + sigma * noise) / alpha
    log_lik = vlb.discretized_gaussian_log_likelihood if discrete else vlb.gaussian_log_likelihood
    return -_sum_dims(log_lik(x, mean, jnp.broadcast_to(gamma_0, x.shape)))


def sample_times(rng: jax.Array, batch: int, antithetic: bool = True) -> jax.Array:
    """t (B,) on [0, 1): i.i.d. uniform, or VDM's low-discrepancy draw t_b = (u + b / B) mod 1 (each t_b uniform, so
    the estimate stays unbiased, with the batch spread evenly over [0, 1))."""
    if antithetic:
        return jnp.mod(jax.random.uniform(rng, ()) + jnp.arange(batch) / batch, 1.0)
    return jax.random.uniform(rng, (batch,))


class VDMBound(NamedTuple):
    """The three terms of the bound per example (B,), nats."""
    prior: jax.Array
    reconstruction: jax.Array
    diffusion: jax.Array

    @property
    def total(self) -> jax.Array:
        return self.prior + self.reconstruction + self.diffusion


def vdm_bound(rng: jax.Array, eps_fn: Callable, x: jax.Array, gamma_fn: Callable, discrete: bool = True,
              antithetic: bool = True) -> VDMBound:
    """One-sample estimate of the bound per example: prior and reconstruction at gamma(1), gamma(0), L_inf at one
    t ~ U(0, 1) and eps per example. eps_fn(z_t, t) -> eps_hat with t (B,) in [0, 1]."""
    rng_t, rng_eps, rng_0 = jax.random.split(rng, 3)
    batch = x.shape[0]
    t = sample_times(rng_t, batch, antithetic).astype(x.dtype)
    gamma_0, gamma_1 = gamma_fn(jnp.zeros((batch,), x.dtype)), gamma_fn(jnp.ones((batch,), x.dtype))
    eps = jax.random.normal(rng_eps, x.shape, x.dtype)
    alpha, sigma = alpha_sigma(_per_example(gamma_fn(t), x))
    diffusion = diffusion_loss(gamma_fn, t, eps, eps_fn(alpha * x + sigma * eps, t))
    reconstruction = reconstruction_nll(gamma_0, x, jax.random.normal(rng_0, x.shape, x.dtype), discrete)
    return VDMBound(prior_kl(gamma_1, x), reconstruction, diffusion)


def bound_bpd(eps_fn: Callable, x0_uint8: jax.Array, gamma_fn: Callable, rng: jax.Array) -> jax.Array:
    """Bits/dim (B,) of 8-bit images under the one-sample estimate of the continuous bound, on x = x0_uint8 / 127.5 - 1;
    average it over an eval set (and draws) as the 'bound bits/dim' of a continuous-time model. Arguments in the
    order of vlb.bound_bpd."""
    x = jnp.asarray(x0_uint8, jnp.float32) / 127.5 - 1.0
    return vdm_bound(rng, eps_fn, x, gamma_fn).total / (np.prod(x.shape[1:]) * np.log(2.0))


class _PositiveDense(nn.Module):
    """x W (+ b) with W = softplus(kernel) > 0 elementwise: increasing in every input."""
    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.normal(1.0), (x.shape[-1], self.features))
        y = x @ jax.nn.softplus(kernel).astype(x.dtype)
        return y + self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else y


class MonotoneGamma(nn.Module):
    """A learnable increasing noise schedule with fixed endpoints (after VDM's monotone network): applied to t (any
    shape, in [0, 1]) it returns

        gamma(t) = gamma_min + (gamma_max - gamma_min) (g(t) - g(0)) / (g(1) - g(0)),
        g(t) = l_1(t) + l_3(2 sigmoid(l_2(t)) - 1) / H,

    l_1, l_2, l_3 dense layers with weights softplus(.) > 0 (widths 1, H, 1), so g, and gamma, is strictly increasing
    and gamma(0) = gamma_min, gamma(1) = gamma_max for every parameter value."""
    gamma_min: float = GAMMA_MIN
    gamma_max: float = GAMMA_MAX
    hidden: int = 1024

    @nn.compact
    def __call__(self, t):
        t = jnp.asarray(t)
        grid = jnp.concatenate([jnp.zeros((1,), t.dtype), jnp.ones((1,), t.dtype), jnp.reshape(t, (-1,))])[:, None]
        features = 2.0 * jax.nn.sigmoid(_PositiveDense(self.hidden, name="hidden")(grid)) - 1.0
        g = (_PositiveDense(1, use_bias=False, name="linear")(grid)
             + _PositiveDense(1, use_bias=False, name="out")(features) / self.hidden)[:, 0]
        fraction = (g[2:] - g[0]) / (g[1] - g[0])
        return jnp.reshape(self.gamma_min + (self.gamma_max - self.gamma_min) * fraction, t.shape)
