"""Predictor-corrector sampling (Song et al. 2021, Algorithms 2-3).

Over the grid t_0 = T > t_1 > ... > t_{n-1} = eps (linspace) and t_n = 0, step k
applies a corrector (Langevin MCMC at fixed t_k) and then a predictor (one step of
a numerical solver of the reverse SDE from t_k to t_{k+1}; the discrete-chain
predictors take chain step n-1-k instead, whose last step lands on the data).
Predictors and correctors are small frozen dataclasses registered by name; a new
one is one class + one decorator.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

import sde_lib
from sde_lib import batch_mul
from samplers.common import check_variance_fn, draw_prior, learned_std, resolve_steps, step_log_variances
from samplers.registry import register_sampler

_PREDICTORS: dict = {}
_CORRECTORS: dict = {}


def register_predictor(name):
    def register(cls):
        _PREDICTORS[name] = cls
        return cls
    return register


def register_corrector(name):
    def register(cls):
        _CORRECTORS[name] = cls
        return cls
    return register


def _lookup(table, kind, name):
    if name not in table:
        raise ValueError(f"Unknown {kind} {name!r}; choose one of {sorted(table)}.")
    return table[name]


def _mean_norm(x):
    """Average over the batch of the per-example L2 norms."""
    return jnp.mean(jnp.sqrt(jnp.sum(jnp.square(x.reshape(x.shape[0], -1)), axis=-1)))


@dataclasses.dataclass(frozen=True)
class Predictor(abc.ABC):
    """One reverse-time step from t to t_next < t: update(rng, x, t, t_next) -> (x, x_mean); t, t_next (B,).
    variance_fn(x, t) -> v is a learned-variance model's (used by the ancestral predictor, ignored by the others)."""

    sde: sde_lib.SDE
    score_fn: object
    num_steps: int
    probability_flow: bool = False
    variance_fn: object = None

    @property
    def rsde(self):
        return self.sde.reverse(self.score_fn, self.probability_flow)

    #: score evaluations per update
    nfe: ClassVar[int] = 1

    @abc.abstractmethod
    def update(self, rng, x, t, t_next):
        ...


@register_predictor("none")
@dataclasses.dataclass(frozen=True)
class NonePredictor(Predictor):
    nfe = 0

    def update(self, rng, x, t, t_next):
        return x, x


@register_predictor("euler_maruyama")
@dataclasses.dataclass(frozen=True)
class EulerMaruyamaPredictor(Predictor):
    """x_mean = x - f_rev(x, t) dt,  x = x_mean + g(t) sqrt(dt) z,  dt = t - t_next (the grid's own spacing).

    score_sde used dt = T / n on the grid linspace(T, eps, n), so x drifted off the
    time its score was evaluated at by up to T / n; here the last step runs from eps to 0.
    """

    def update(self, rng, x, t, t_next):
        dt = t - t_next
        drift, diffusion = self.rsde.sde(x, t)
        x_mean = x - batch_mul(dt, drift)
        return x_mean + batch_mul(diffusion * jnp.sqrt(dt), jax.random.normal(rng, x.shape)), x_mean


class _DiscreteChainPredictor(Predictor):
    """A predictor tied to the SDE's own N-step chain: it needs num_steps == sde.N."""

    def __post_init__(self):
        if self.num_steps != self.sde.N:
            raise ValueError(f"Predictor {type(self).__name__} follows the SDE's {self.sde.N}-step chain; "
                             f"set num_steps to {self.sde.N} (got {self.num_steps}) or use euler_maruyama.")


@register_predictor("reverse_diffusion")
@dataclasses.dataclass(frozen=True)
class ReverseDiffusionPredictor(_DiscreteChainPredictor):
    """Reverse of the forward discretization (Song et al. 2021, eq. 46): x_mean = x - f_rev, x = x_mean + G_rev z."""

    def update(self, rng, x, t, t_next):
        f, G = self.rsde.discretize(x, t)
        x_mean = x - f
        return x_mean + batch_mul(G, jax.random.normal(rng, x.shape)), x_mean


@register_predictor("ancestral_sampling")
@dataclasses.dataclass(frozen=True)
class AncestralSamplingPredictor(_DiscreteChainPredictor):
    """Ancestral sampling of the discrete chain: (x_mean, std) = sde.ancestral_step(x, s(x, t), t), x = x_mean + std z
    (DDPM's step for VP, SMLD's for VE; see sde_lib). With a learned variance (VP), std = sqrt(Sigma_theta),
    log Sigma_theta = v log beta_i + (1 - v) log beta~_i on chain step i = timestep(t), beta~_1 clipped to beta~_2
    as in training (losses/vlb.py)."""

    def __post_init__(self):
        super().__post_init__()
        if self.probability_flow:
            raise ValueError("ancestral_sampling has no probability-flow form; use reverse_diffusion or euler_maruyama.")
        if not self.sde.has_discrete_chain:
            raise ValueError(f"ancestral_sampling needs a VP or VE SDE (one with a discrete chain), "
                             f"not {type(self.sde).__name__}.")

    def update(self, rng, x, t, t_next):
        x_mean, std = self.sde.ancestral_step(x, self.score_fn(x, t), t)
        if self.variance_fn is not None:
            std = learned_std(self.variance_fn(x, t), *self._log_variances(self.sde.timestep(t)))
        return x_mean + batch_mul(std, jax.random.normal(rng, x.shape)), x_mean

    def _log_variances(self, i):
        """(log beta_i, log beta~_max(i, 1)) of the VP chain's step i -> i - 1 (step 0 lands on x_0: alpha = 1)."""
        coeffs = self.sde.discrete_marginal_coeffs
        alpha, sigma = coeffs(i)
        alpha_prev, sigma_prev = coeffs(jnp.maximum(i - 1, 0))
        log_beta = step_log_variances(alpha, sigma, jnp.where(i > 0, alpha_prev, 1.0), sigma_prev)[0]
        return log_beta, step_log_variances(*coeffs(jnp.maximum(i, 1)), alpha_prev, sigma_prev)[1]


@dataclasses.dataclass(frozen=True)
class Corrector(abc.ABC):
    """n_steps of MCMC targeting p_t at fixed t: update(rng, x, t) -> (x, x_mean)."""

    sde: sde_lib.SDE
    score_fn: object
    snr: float
    n_steps: int

    @abc.abstractmethod
    def step_size(self, grad, z, t):
        ...

    def update(self, rng, x, t):
        def body(_, carry):
            rng, x, _ = carry
            rng, step_rng = jax.random.split(rng)
            grad = self.score_fn(x, t)
            z = jax.random.normal(step_rng, x.shape)
            eta = self.step_size(grad, z, t)
            x_mean = x + batch_mul(eta, grad)
            return rng, x_mean + batch_mul(jnp.sqrt(2.0 * eta), z), x_mean

        _, x, x_mean = jax.lax.fori_loop(0, self.n_steps, body, (rng, x, x))
        return x, x_mean

    @property
    def nfe(self):
        return self.n_steps


@register_corrector("none")
@dataclasses.dataclass(frozen=True)
class NoneCorrector(Corrector):
    def step_size(self, grad, z, t):
        raise AssertionError("unused")

    def update(self, rng, x, t):
        return x, x

    @property
    def nfe(self):
        return 0


@register_corrector("langevin")
@dataclasses.dataclass(frozen=True)
class LangevinCorrector(Corrector):
    """Langevin MCMC with the signal-to-noise step size (Song et al. 2021, Algorithm 5):

        eta = 2 alpha (snr ||z|| / ||s(x, t)||)^2,   x <- x + eta s + sqrt(2 eta) z.

    The norms are averaged over the batch, as in the paper: a per-example ratio
    explodes for samples whose score is near zero (close to a mode). Under jit
    the average spans the global batch, so results do not depend on sharding.
    """

    def step_size(self, grad, z, t):
        return 2.0 * self.sde.langevin_alpha(t) * (self.snr * _mean_norm(z) / _mean_norm(grad)) ** 2


@register_corrector("ald")
@dataclasses.dataclass(frozen=True)
class AnnealedLangevinCorrector(Corrector):
    """Annealed Langevin dynamics (Song & Ermon 2019): eta = 2 alpha (snr sigma(t))^2."""

    def step_size(self, grad, z, t):
        return 2.0 * self.sde.langevin_alpha(t) * (self.snr * self.sde.marginal_coeffs(t)[1]) ** 2


@register_sampler("pc")
def get_pc_sampler(sde, shape, predictor="reverse_diffusion", corrector="langevin", snr=0.16, n_steps=1,
                   probability_flow=False, denoise=True, num_steps=None, eps=None, constraint=None):
    """sampler(rng, score_fn, variance_fn=None) -> (x, nfe): PC sampling from the prior at T down to 0; a
    learned-variance model's variance_fn(x, t) -> v sets the ancestral predictor's noise.

    denoise returns the last predictor step's mean x_mean (score_sde's noise_removal) rather than x:
    for the discrete chains that is the chain's noise-free last step (for VE exactly Tweedie's
    x + sigma_0^2 s); for euler_maruyama the mean of the step from eps to 0.

    constraint (samplers/inverse.py, a LinearObservation of `shape`) solves an inverse problem: after the
    corrector at t and the predictor to t_next, the observed coordinates are replaced by a sample of their
    forward marginal at that time (x_mean: by its mean), and the output holds the observation exactly.
    """
    num_steps, eps = resolve_steps(sde, num_steps, eps)
    predictor_cls = _lookup(_PREDICTORS, "predictor", predictor)
    corrector_cls = _lookup(_CORRECTORS, "corrector", corrector)
    # Validate the combination now, not at the first call.
    predictor_cls(sde, None, num_steps, probability_flow)
    corrector_cls(sde, None, snr, n_steps)
    if constraint is not None and tuple(constraint.known.shape) != tuple(shape):
        raise ValueError(f"The observed images have shape {tuple(constraint.known.shape)}, but the sampler draws "
                         f"{tuple(shape)}; give one observation per sample.")

    def sampler(rng, score_fn, variance_fn=None):
        check_variance_fn(sde, variance_fn)
        pred = predictor_cls(sde, score_fn, num_steps, probability_flow, variance_fn)
        corr = corrector_cls(sde, score_fn, snr, n_steps)
        timesteps = jnp.append(jnp.linspace(sde.T, eps, num_steps), 0.0)
        x, rng = draw_prior(sde, rng, shape)

        def body(i, carry):
            rng, x, _ = carry
            rng, corr_rng, pred_rng = jax.random.split(rng, 3)
            t, t_next = jnp.full((shape[0],), timesteps[i]), jnp.full((shape[0],), timesteps[i + 1])
            x, _ = corr.update(corr_rng, x, t)
            if constraint is not None:
                known_rng, known_next_rng = jax.random.split(jax.random.fold_in(rng, 1))
                x = constraint.marginal_sample(known_rng, x, *sde.marginal_coeffs(t))
            x, x_mean = pred.update(pred_rng, x, t, t_next)
            if constraint is not None:
                alpha, sigma = sde.marginal_coeffs(t_next)
                x = constraint.marginal_sample(known_next_rng, x, alpha, sigma)
                x_mean = constraint.marginal_sample(None, x_mean, alpha, sigma)
            return rng, x, x_mean

        _, x, x_mean = jax.lax.fori_loop(0, num_steps, body, (rng, x, x))
        x = x_mean if denoise else x
        return (x if constraint is None else constraint.project(x)), num_steps * (pred.nfe + corr.nfe)

    return sampler
