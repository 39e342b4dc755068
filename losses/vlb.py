"""The variational bound of the discrete VP (DDPM) chain: its terms, its estimators and the hybrid loss.

Notation (Ho et al. 2020). Data x_0; betas beta_1..beta_N, any schedule; alpha_t = 1 - beta_t,
alpha_bar_t = prod_{s <= t} alpha_s, so q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I): the chain of
sde_lib.VPSDE.discrete_marginal_coeffs. Functions take the 0-based step index i = t - 1 (as sde_lib.VPSDE.timestep
gives); the docstrings write t. The bound (Ho et al. eq. 5), in nats per example:

    -log p(x_0) <= L_T + sum_{t=2}^N L_{t-1} + L_0,
    L_T     = KL(q(x_N | x_0) || N(0, I)),
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)),   one x_t ~ q(x_t | x_0) per term,
    L_0     = -log p(x_0 | x_1).

Reporting it in eval. `bound_bpd` gives per-example bits/dim of 8-bit images, the N + 1 terms summed exactly over t
(one x_t draw per t) and divided by D ln 2. The decoder L_0 puts mass on the 256 pixel values, so these are bits/dim
of the discrete data with no dequantisation offset: an upper bound on the model's discrete NLL, as Ho et al. and
Nichol & Dhariwal tabulate. Eval would report it as 'bound bits/dim' beside samplers.likelihood's 'probability-flow
bits/dim' (uniform dequantisation plus the ODE's change of variables, +8 for the 256 bins); both bound the discrete
NLL from above, for two different models that the same network defines (the discrete chain with its reverse
variances here, the probability-flow ODE there), so they need not agree. A score model trained on this chain enters
as eps_fn(x, i) = -sqrt(1 - alpha_bar_i) score_fn(x, sde.step_time(i)); a continuous-time model's bound is
losses.vdm.bound_bpd with vdm.vp_sde_gamma.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

VARIANCES = ("small", "large", "learned")
HALF_BIN = 1.0 / 255.0  # 8-bit data x = -1 + 2k/255 in [-1, 1]: bins of width 2/255
HYBRID_LAMBDA = 1e-3


def _sum_dims(x: jax.Array) -> jax.Array:
    return jnp.sum(jnp.reshape(x, (x.shape[0], -1)), axis=-1)


def _gather(table: np.ndarray, i: jax.Array, like: jax.Array) -> jax.Array:
    """table[i] (B,) shaped to broadcast against like (B, ...), in like's dtype."""
    return jnp.reshape(jnp.asarray(table, like.dtype)[i], (-1,) + (1,) * (like.ndim - 1))


@dataclasses.dataclass(frozen=True, eq=False)
class DiscreteChain:
    """Tables of the chain for betas (N,), N >= 2, 0 < beta < 1 (numpy float64, so the bound is as exact as
    the dtype it is evaluated in; 1 - alpha_bar_t via expm1, exact for tiny betas)."""

    betas: np.ndarray

    def __post_init__(self):
        betas = np.asarray(self.betas, np.float64)
        if betas.ndim != 1 or len(betas) < 2 or not np.all((betas > 0) & (betas < 1)):
            raise ValueError(f"betas must be a 1-D array of N >= 2 values in (0, 1), got shape {betas.shape}.")
        object.__setattr__(self, "betas", betas)

    @classmethod
    def from_sde(cls, sde) -> "DiscreteChain":
        """The DDPM chain of an sde_lib.VPSDE."""
        return cls(sde.discrete_betas)

    @property
    def N(self) -> int:
        return len(self.betas)

    @functools.cached_property
    def log_alphas_cumprod(self) -> np.ndarray:
        return np.cumsum(np.log1p(-self.betas))

    @functools.cached_property
    def alphas_cumprod(self) -> np.ndarray:
        return np.exp(self.log_alphas_cumprod)

    @functools.cached_property
    def one_minus_alphas_cumprod(self) -> np.ndarray:
        return -np.expm1(self.log_alphas_cumprod)

    @functools.cached_property
    def alphas_cumprod_prev(self) -> np.ndarray:
        """alpha_bar_{t-1}, with alpha_bar_0 = 1."""
        return np.append(1.0, self.alphas_cumprod[:-1])

    @functools.cached_property
    def posterior_variance(self) -> np.ndarray:
        """beta~_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t); beta~_1 = 0."""
        return self.betas * np.append(0.0, self.one_minus_alphas_cumprod[:-1]) / self.one_minus_alphas_cumprod

    @functools.cached_property
    def posterior_log_variance(self) -> np.ndarray:
        """log beta~_t with the t = 1 entry (log 0) replaced by log beta~_2, as Nichol & Dhariwal clip it."""
        return np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))

    @functools.cached_property
    def posterior_mean_coefs(self) -> tuple[np.ndarray, np.ndarray]:
        """The coefficients of x_0 and x_t in mu~_t (q_posterior)."""
        prev = np.append(0.0, self.one_minus_alphas_cumprod[:-1])
        return (np.sqrt(self.alphas_cumprod_prev) * self.betas / self.one_minus_alphas_cumprod,
                np.sqrt(1.0 - self.betas) * prev / self.one_minus_alphas_cumprod)


def q_sample(chain: DiscreteChain, x0: jax.Array, i: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise."""
    return (_gather(np.sqrt(chain.alphas_cumprod), i, x0) * x0
            + _gather(np.sqrt(chain.one_minus_alphas_cumprod), i, x0) * noise)


def q_posterior(chain: DiscreteChain, x0: jax.Array, xt: jax.Array, i: jax.Array):
    """Mean, variance and (clipped) log-variance of the forward posterior (Ho et al. eqs. 6-7)

        q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I),
        mu~_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
                + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t,
        beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t.

    At t = 1 it is the point mass on x_0 (variance 0, log-variance clipped to log beta~_2)."""
    c0, ct = chain.posterior_mean_coefs
    mean = _gather(c0, i, x0) * x0 + _gather(ct, i, x0) * xt
    return mean, _gather(chain.posterior_variance, i, x0), _gather(chain.posterior_log_variance, i, x0)


def predict_x0(chain: DiscreteChain, xt: jax.Array, i: jax.Array, eps: jax.Array) -> jax.Array:
    """x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), the inverse of q_sample."""
    return ((xt - _gather(np.sqrt(chain.one_minus_alphas_cumprod), i, xt) * eps)
            / _gather(np.sqrt(chain.alphas_cumprod), i, xt))


def interpolated_log_variance(chain: DiscreteChain, i: jax.Array, v: jax.Array) -> jax.Array:
    """log Sigma_t = v log beta_t + (1 - v) log beta~_t (Nichol & Dhariwal eq. 15), v in [0, 1] of shape (B, ...)."""
    return v * _gather(np.log(chain.betas), i, v) + (1.0 - v) * _gather(chain.posterior_log_variance, i, v)


def p_mean_log_variance(chain: DiscreteChain, xt: jax.Array, i: jax.Array, eps: jax.Array,
                        variance: str = "large", v_raw: jax.Array | None = None):
    """Mean and log-variance of the reverse step p(x_{t-1} | x_t) = N(mu, Sigma) given the network's eps:

        mu = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)           (Ho et al. eq. 11)

    (which is mu~_t at x_0 = predict_x0), and Sigma = beta_t ('large'), beta~_t ('small', clipped at t = 1) or
    'learned': interpolated_log_variance at v = (v_raw + 1) / 2, where v_raw in [-1, 1] is the second half of a
    2C-channel output (split_output)."""
    if variance not in VARIANCES:
        raise ValueError(f"Unknown variance {variance!r}; choose one of {VARIANCES}.")
    if (variance == "learned") != (v_raw is not None):
        raise ValueError("variance='learned' needs the network's v_raw, and only it takes one.")
    coef = chain.betas / np.sqrt(chain.one_minus_alphas_cumprod)
    mean = (xt - _gather(coef, i, xt) * eps) / _gather(np.sqrt(1.0 - chain.betas), i, xt)
    if variance == "learned":
        log_var = interpolated_log_variance(chain, i, 0.5 * (v_raw + 1.0))
    else:
        table = np.log(chain.betas) if variance == "large" else chain.posterior_log_variance
        log_var = jnp.broadcast_to(_gather(table, i, xt), xt.shape)
    return mean, log_var


def split_output(output: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(eps, v_raw) from a learned-variance network's 2C channels (last axis): eps first, v_raw second."""
    channels = output.shape[-1]
    if channels % 2:
        raise ValueError(f"A learned-variance output has 2C channels; got {channels}.")
    return output[..., : channels // 2], output[..., channels // 2:]


def normal_kl(mean1, log_var1, mean2, log_var2):
    """KL(N(mean1, e^log_var1) || N(mean2, e^log_var2)) elementwise:
    1/2 (log_var2 - log_var1 + e^(log_var1 - log_var2) + (mean1 - mean2)^2 e^-log_var2 - 1)."""
    return 0.5 * (log_var2 - log_var1 + jnp.exp(log_var1 - log_var2)
                  + jnp.square(mean1 - mean2) * jnp.exp(-log_var2) - 1.0)


def gaussian_log_likelihood(x, mean, log_var):
    """log N(x; mean, e^log_var) elementwise (the decoder for continuous data)."""
    return -0.5 * (np.log(2 * np.pi) + log_var + jnp.square(x - mean) * jnp.exp(-log_var))


def discretized_gaussian_log_likelihood(x, mean, log_var):
    """log P(x) elementwise for x on the 8-bit grid {-1 + 2k/255} under N(mean, s^2), s = e^(log_var / 2), integrated
    over x's bin, the edge bins open to -inf and +inf (Ho et al. eq. 13):

        P(x) = Phi(b) - Phi(a),   a = (x - 1/255 - mean) / s  (-inf at x = -1),
                                  b = (x + 1/255 - mean) / s  (+inf at x = 1).

    From log Phi (log_ndtr) as log Phi(hi) + log(-expm1(log Phi(lo) - log Phi(hi))), with (lo, hi) = (a, b) left of
    the mean and the mirror (-b, -a) right of it (Phi(b) - Phi(a) = Phi(-a) - Phi(-b)), so neither tail cancels."""
    inv_s = jnp.exp(-0.5 * log_var)
    a, b = (x - mean - HALF_BIN) * inv_s, (x - mean + HALF_BIN) * inv_s
    left = a + b < 0
    lo, hi = jnp.where(left, a, -b), jnp.where(left, b, -a)
    log_lo, log_hi = log_ndtr(lo), log_ndtr(hi)
    interior = log_hi + jnp.log(-jnp.expm1(log_lo - log_hi))
    return jnp.where(x < -1.0 + HALF_BIN, log_ndtr(b), jnp.where(x > 1.0 - HALF_BIN, log_ndtr(-a), interior))


def prior_kl(chain: DiscreteChain, x0: jax.Array) -> jax.Array:
    """L_T = KL(N(sqrt(alpha_bar_N) x_0, (1 - alpha_bar_N) I) || N(0, I)) per example (B,), nats."""
    mean = np.sqrt(chain.alphas_cumprod[-1]) * x0
    log_var = jnp.full_like(x0, np.log(chain.one_minus_alphas_cumprod[-1]))
    return _sum_dims(normal_kl(mean, log_var, 0.0, 0.0))


def vlb_term(chain: DiscreteChain, x0: jax.Array, xt: jax.Array, i: jax.Array, eps: jax.Array,
             variance: str = "large", v_raw: jax.Array | None = None, discrete: bool = True) -> jax.Array:
    """The term of step t at x_t, per example (B,), nats: L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))
    for t >= 2, L_0 = -log p(x_0 | x_1) for t = 1, with p from p_mean_log_variance. The decoder p(x_0 | x_1) is
    discretized_gaussian_log_likelihood for 8-bit data in [-1, 1], or gaussian_log_likelihood (discrete=False)."""
    mean, log_var = p_mean_log_variance(chain, xt, i, eps, variance, v_raw)
    true_mean, _, true_log_var = q_posterior(chain, x0, xt, i)
    kl = _sum_dims(normal_kl(true_mean, true_log_var, mean, log_var))
    log_lik = discretized_gaussian_log_likelihood if discrete else gaussian_log_likelihood
    return jnp.where(i == 0, -_sum_dims(log_lik(x0, mean, log_var)), kl)


def _eps_and_v(output, variance):
    """eps_fn's output as (eps, v_raw): a pair exactly when the variance is learned."""
    if isinstance(output, tuple) != (variance == "learned"):
        raise ValueError(f"eps_fn must return (eps, v_raw) for variance='learned' and eps alone otherwise "
                         f"(variance={variance!r}, got {type(output).__name__}).")
    return output if variance == "learned" else (output, None)


def bound_terms(rng: jax.Array, chain: DiscreteChain, eps_fn: Callable, x0: jax.Array, variance: str = "large",
                discrete: bool = True) -> tuple[jax.Array, jax.Array]:
    """(L_T (B,), [L_0, L_1, ..., L_{N-1}] (N, B)), nats, each L with its own x_t ~ q(x_t | x_0).

    eps_fn(x_t, i) -> eps, or (eps, v_raw) for variance='learned', with i (B,) int32 step indices; evaluated
    with lax.map over the N steps, so the whole bound traces (and jits) once."""
    batch = x0.shape[0]

    def term(args):
        i, key = args
        index = jnp.full((batch,), i, jnp.int32)
        xt = q_sample(chain, x0, index, jax.random.normal(key, x0.shape, x0.dtype))
        eps, v_raw = _eps_and_v(eps_fn(xt, index), variance)
        return vlb_term(chain, x0, xt, index, eps, variance, v_raw, discrete)

    terms = jax.lax.map(term, (jnp.arange(chain.N), jax.random.split(rng, chain.N)))
    return prior_kl(chain, x0), terms


def bound_bpd(eps_fn: Callable, x0_uint8: jax.Array, betas, rng: jax.Array, variance: str = "large") -> jax.Array:
    """Bits/dim (B,) of 8-bit images x0_uint8 (B, ...) under the full discrete bound, exact over t:
    (L_T + sum_t L_{t-1}) / (D ln 2) on x_0 = x0_uint8 / 127.5 - 1 (eps_fn as in bound_terms; betas a concrete
    array). Traceable: jit it as jax.jit(lambda x, rng: bound_bpd(eps_fn, x, betas, rng))."""
    x0 = jnp.asarray(x0_uint8, jnp.float32) / 127.5 - 1.0
    prior, terms = bound_terms(rng, DiscreteChain(betas), eps_fn, x0, variance)
    return (prior + jnp.sum(terms, axis=0)) / (np.prod(x0.shape[1:]) * np.log(2.0))


# Estimating the bound with one step per example. Sum_t L_{t-1} = E_{t ~ p}[L_{t-1} / p_t] for any p > 0:
# uniform p_t = 1 / N, or Nichol & Dhariwal's importance sampling p_t ~ sqrt(E[L_t^2]) from a history of losses.

class LossHistory(NamedTuple):
    """The latest K values of each step's term, values (N, K), and how many were seen, counts (N,) (capped at K)."""
    values: jax.Array
    counts: jax.Array


def init_history(n: int, per_step: int = 10) -> LossHistory:
    return LossHistory(jnp.zeros((n, per_step), jnp.float32), jnp.zeros((n,), jnp.int32))


def update_history(history: LossHistory, i: jax.Array, losses: jax.Array) -> LossHistory:
    """Append each losses[b] to the row of step i[b], in batch order, dropping a full row's oldest value.
    Feed it every host's (i, losses) (gathered) so all hosts carry the same history."""
    k = history.values.shape[1]

    def push(h, item):
        step, loss = item
        row, count = h.values[step], h.counts[step]
        row = jnp.where(count < k, row.at[jnp.minimum(count, k - 1)].set(loss), jnp.roll(row, -1).at[-1].set(loss))
        return LossHistory(h.values.at[step].set(row), h.counts.at[step].set(jnp.minimum(count + 1, k))), None

    losses = jax.lax.stop_gradient(losses).astype(history.values.dtype)
    return jax.lax.scan(push, history, (i, losses))[0]


def timestep_probs(history: LossHistory, uniform_mix: float = 1e-3) -> jax.Array:
    """p_t = (1 - uniform_mix) sqrt(E[L_t^2]) / sum_s sqrt(E[L_s^2]) + uniform_mix / N once every step has K values
    in the history, uniform before."""
    n = history.values.shape[0]
    w = jnp.sqrt(jnp.mean(jnp.square(history.values), axis=1))
    ready = jnp.all(history.counts >= history.values.shape[1]) & (jnp.sum(w) > 0)
    p = (1.0 - uniform_mix) * w / jnp.where(ready, jnp.sum(w), 1.0) + uniform_mix / n
    return jnp.where(ready, p, jnp.full((n,), 1.0 / n))


def sample_timesteps(rng: jax.Array, probs: jax.Array, batch: int) -> tuple[jax.Array, jax.Array]:
    """i ~ probs (B,) int32 and the importance weights 1 / p_i (B,), so that E[L_i / p_i] = sum_t L_t."""
    i = jax.random.categorical(rng, jnp.log(probs), shape=(batch,)).astype(jnp.int32)
    return i, 1.0 / probs[i]


def sampled_bound(rng: jax.Array, chain: DiscreteChain, eps_fn: Callable, x0: jax.Array, probs: jax.Array,
                  variance: str = "large", discrete: bool = True):
    """Unbiased one-step estimate of the bound per example, L_T + L_{i} / p_i with i ~ probs, nats (B,);
    also returns i and the term L_i (B,) for update_history."""
    rng_t, rng_z = jax.random.split(rng)
    i, inv_p = sample_timesteps(rng_t, probs, x0.shape[0])
    xt = q_sample(chain, x0, i, jax.random.normal(rng_z, x0.shape, x0.dtype))
    eps, v_raw = _eps_and_v(eps_fn(xt, i), variance)
    term = vlb_term(chain, x0, xt, i, eps, variance, v_raw, discrete)
    return prior_kl(chain, x0) + inv_p * term, i, term


def hybrid_loss(chain: DiscreteChain, x0: jax.Array, xt: jax.Array, i: jax.Array, noise: jax.Array, eps: jax.Array,
                v_raw: jax.Array, lam: float = HYBRID_LAMBDA, discrete: bool = True) -> jax.Array:
    """L_hybrid = L_simple + lam L_vlb per example (B,) (Nichol & Dhariwal eq. 16), x_t = q_sample(x_0, i, noise):

        L_simple = mean_dims (noise - eps)^2,
        L_vlb    = N / 1000 * vlb_term(eps -> stop_gradient(eps), learned variance) / (D ln 2),

    so L_vlb trains only the variance and L_simple the mean. The term is in bits/dim and scaled by N / 1000 as in
    their released setup, so lam = 0.001 weighs the estimate N L_t of the sum the same at every chain length."""
    dim = np.prod(x0.shape[1:])
    simple = jnp.mean(jnp.reshape(jnp.square(noise - eps), (x0.shape[0], -1)), axis=-1)
    term = vlb_term(chain, x0, xt, i, jax.lax.stop_gradient(eps), "learned", v_raw, discrete)
    return simple + lam * (chain.N / 1000.0) * term / (dim * np.log(2.0))
