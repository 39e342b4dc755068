"""Denoising score matching, the one objective behind every training loss here.

With x_t = alpha x_0 + sigma z (z ~ N(0, I)) the optimal score is
E[-z / sigma | x_t], so every loss is a weighted regression

    L = E_{noise level} E_{x_0, z} [ w * || sigma s(x_t, t) + z ||^2 ]            (1)

and differs only in how the noise level is drawn and weighted:

* continuous (Song et al. 2021, eq. 7): t ~ U(eps, T), (alpha, sigma) = marginal_coeffs(t),
  w = 1 (lambda(t) = sigma^2), or w = g(t)^2 / sigma^2 with likelihood_weighting
  (lambda(t) = g(t)^2, the weighting that bounds the negative log-likelihood).
* DDPM (VP, discrete): i ~ U{0..N-1}, (alpha, sigma) = (sqrt(alpha_bar_i), sqrt(1 - alpha_bar_i)).
  With s = -eps_hat / sigma, (1) is L_simple = E || eps_hat - z ||^2.
* SMLD (VE, discrete): i ~ U{0..N-1}, (alpha, sigma) = (1, sigma_i); (1) is NCSN's
  sigma_i^2 || s + z / sigma_i ||^2.
* EDM (Karras et al. 2022, continuous, `EDMLevels`): EDM's noise level sigma_e = sigma / alpha is log-normal,
  log sigma_e ~ N(P_mean, P_std^2), t = sde.t_from_log_snr(-log sigma_e); its loss lambda(sigma_e) ||D - x_0||^2
  with lambda = (sigma_e^2 + sigma_d^2) / (sigma_e sigma_d)^2 and D = x0_hat is (1) with
  w = (sigma_e^2 + sigma_d^2) / sigma_d^2, since D - x_0 = sigma_e (sigma s + z). With EDM's preconditioning
  (models.score_fn, prediction 'edm') this is the unit-variance regression of F on its target.

`reduce_mean` averages the squared error over pixels, else halves its sum (score_sde).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

import sde_lib


@dataclasses.dataclass(frozen=True)
class EDMLevels:
    """EDM's training noise levels and weights (module docstring): P_mean, P_std and sigma_d, EDM's defaults."""

    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data: float = 0.5


def check_options(sde: sde_lib.SDE, continuous: bool, likelihood_weighting: bool,
                  edm: EDMLevels | None = None) -> None:
    """ValueError when the options cannot go together: likelihood weighting and EDM's levels are continuous-time
    weightings (and do not combine), and discrete time needs the SDE's discrete chain (the sub-VP SDE has none;
    its perturbation_coeffs says so)."""
    if (likelihood_weighting or edm is not None) and not continuous:
        raise ValueError(f"{'likelihood_weighting' if likelihood_weighting else 'training.loss=edm'} needs "
                         f"continuous training (config.training.continuous=True).")
    if likelihood_weighting and edm is not None:
        raise ValueError("training.loss='edm' weights the noise levels itself; set likelihood_weighting=False.")
    if not continuous:
        jax.eval_shape(lambda: sde.perturbation_coeffs(jnp.zeros(1), continuous=False))


def score_matching_loss(rng: jax.Array, score_fn, x0: jax.Array, sde: sde_lib.SDE, *, continuous: bool = True,
                        reduce_mean: bool = False, likelihood_weighting: bool = False,
                        eps: float = 1e-5, edm: EDMLevels | None = None) -> jax.Array:
    """Monte-Carlo estimate of (1) on the batch x0 (B, ...), one noise level per example."""
    check_options(sde, continuous, likelihood_weighting, edm)
    rng_t, rng_z = jax.random.split(rng)
    batch = x0.shape[0]
    if edm is not None:
        log_sigma_e = edm.p_mean + edm.p_std * jax.random.normal(rng_t, (batch,))
        t = jnp.clip(sde.t_from_log_snr(-log_sigma_e), eps, sde.T)
        alpha, sigma = sde.marginal_coeffs(t)
        weight = ((sigma / alpha) ** 2 + edm.sigma_data**2) / edm.sigma_data**2
    elif continuous:
        t = jax.random.uniform(rng_t, (batch,), minval=eps, maxval=sde.T)
        alpha, sigma = sde.marginal_coeffs(t)
        weight = sde.sde(jnp.zeros_like(x0), t)[1] ** 2 / sigma**2 if likelihood_weighting else 1.0
    else:
        i = jax.random.randint(rng_t, (batch,), 0, sde.N)
        t = sde.step_time(i)
        alpha, sigma = sde.discrete_marginal_coeffs(i)
        weight = 1.0
    z = jax.random.normal(rng_z, x0.shape, x0.dtype)
    xt = sde_lib.batch_mul(alpha, x0) + sde_lib.batch_mul(sigma, z)
    residual = jnp.square(sde_lib.batch_mul(sigma, score_fn(xt, t)) + z).reshape(batch, -1)
    per_example = jnp.mean(residual, axis=-1) if reduce_mean else 0.5 * jnp.sum(residual, axis=-1)
    return jnp.mean(weight * per_example)


def drop_labels(rng: jax.Array, labels: jax.Array, null, rate: float) -> jax.Array:
    """Replace each example's condition by the null one with probability `rate` (classifier-free guidance
    training: one network learns both s(x, t | y) and the unconditional s(x, t)). labels (B,) class labels
    with null = num_classes, or (B, L) a prompt's token ids with null (L,) the empty prompt's."""
    drop = jax.random.uniform(rng, labels.shape[:1]) < rate
    return jnp.where(drop.reshape(drop.shape + (1,) * (labels.ndim - 1)), jnp.asarray(null, labels.dtype), labels)
