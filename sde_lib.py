"""Forward SDEs of score-based generative modelling and their reverses.

Every SDE here is linear in x, dx = f(t) x dt + g(t) dw, so its perturbation
kernel is Gaussian:

    p_0t(x_t | x_0) = N(x_t; alpha(t) x_0, sigma(t)^2 I).

`marginal_coeffs(t) -> (alpha, sigma)` is that one fact; `marginal_prob`,
the losses and the fast samplers are all written on it. The method names
(`sde`, `marginal_prob`, `prior_sampling`, `prior_logp`, `discretize`,
`reverse`) follow the original score_sde API.

Shapes: x is (B, ...) and t is (B,) with values in [0, T]. Per-example
quantities broadcast over the trailing dimensions of x.
"""
from __future__ import annotations

import abc
import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]

#: Conventions for the time label of a discrete-time network (`SDE.noise_label`): 'score_sde', that of
#: yang-song/score_sde and its published checkpoints, or 'floor_index', this framework's before it had
#: the option (the step floor(t (N-1) / T) of the chain, counted from the data, for VP and VE alike).
DISCRETE_LABELS = ("score_sde", "floor_index")


def batch_mul(a: jax.Array, x: jax.Array) -> jax.Array:
    """Multiply per-example values a (B,) into x (B, ...)."""
    return jnp.reshape(a, a.shape + (1,) * (x.ndim - a.ndim)) * x


def fold_patches(x, p: int):
    """(B, H, W, C) -> (B, H/p, W/p, p p C): each p x p patch folded into channels, [i, j, c] at (i p + j) C + c
    (space-to-depth); fold_patches(x, 1) is x."""
    if p == 1:
        return x
    b, h, w, c = x.shape
    if h % p or w % p:
        raise ValueError(f"An image of {h}x{w} does not split into {p}x{p} patches.")
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // p, w // p, p * p * c)


def unfold_patches(x, p: int):
    """The inverse of fold_patches: (B, h, w, p p C) -> (B, h p, w p, C) (depth-to-space)."""
    if p == 1:
        return x
    b, h, w, pc = x.shape
    x = x.reshape(b, h, w, p, p, pc // (p * p)).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * p, w * p, pc // (p * p))


def _standard_normal_logp(z: jax.Array, scale: float) -> jax.Array:
    """log N(z; 0, scale^2 I), summed over all but the batch axis."""
    dim = np.prod(z.shape[1:])
    sq = jnp.sum(jnp.reshape(z, (z.shape[0], -1)) ** 2, axis=-1)
    return -0.5 * dim * np.log(2 * np.pi * scale**2) - 0.5 * sq / scale**2


class SDE(abc.ABC):
    """A forward SDE dx = f(x, t) dt + g(t) dw on t in [0, T] with N discrete steps.

    Subclasses give `sde`, `marginal_coeffs`, `prior_scale`; the rest follows.
    """

    def __post_init__(self):
        if self.discrete_labels not in DISCRETE_LABELS:
            raise ValueError(f"Unknown discrete_labels {self.discrete_labels!r} (config.model.discrete_labels); "
                             f"choose one of {list(DISCRETE_LABELS)}.")

    N: int
    #: How a discrete-time network is told its step, one of DISCRETE_LABELS (see `noise_label`).
    discrete_labels: str
    T: float = 1.0
    #: Smallest time the samplers and the likelihood integrate down to.
    sampling_eps: float = 1e-3

    @abc.abstractmethod
    def sde(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Drift f(x, t) (shape of x) and diffusion g(t) (shape (B,))."""

    @abc.abstractmethod
    def marginal_coeffs(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(alpha(t), sigma(t)) with x_t = alpha(t) x_0 + sigma(t) z, z ~ N(0, I)."""

    @property
    @abc.abstractmethod
    def prior_scale(self) -> float:
        """Standard deviation of the prior p_T = N(0, prior_scale^2 I)."""

    def marginal_prob(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean alpha(t) x_0 (shape of x) and std sigma(t) (shape (B,)) of p_0t(x_t | x_0)."""
        alpha, sigma = self.marginal_coeffs(t)
        return batch_mul(alpha, x), sigma

    def prior_sampling(self, rng: jax.Array, shape) -> jax.Array:
        """A sample of the prior p_T of the given shape."""
        return self.prior_scale * jax.random.normal(rng, shape)

    def prior_logp(self, z: jax.Array) -> jax.Array:
        """log p_T(z) per example, shape (B,)."""
        return _standard_normal_logp(z, self.prior_scale)

    def timestep(self, t: jax.Array) -> jax.Array:
        """Index i = floor(t (N-1) / T) of the discrete step whose cell [i, i+1) T/(N-1) holds t.

        Floor (as in score_sde's samplers) maps the sampler grid linspace(T, eps, N) onto each
        step exactly once; `discretize` and the ancestral step use it.
        """
        return jnp.clip(jnp.floor(t * (self.N - 1) / self.T), 0, self.N - 1).astype(jnp.int32)

    def step_time(self, i: jax.Array) -> jax.Array:
        """A time t at which step i is both `timestep(t)` and `network_step(t)`: (i + 1/4) T / (N-1),
        inside the floor cell [i, i+1) and the rounding cell [i - 1/2, i + 1/2), away from their edges."""
        return (i + 0.25) * self.T / (self.N - 1)

    def discrete_marginal_coeffs(self, i: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(alpha_i, sigma_i) of the SDE's own discrete chain after step i (DDPM for VP, SMLD for VE)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no discrete chain; train it with config.training.continuous=True.")

    #: Whether the SDE has a discrete chain of its own (`discrete_marginal_coeffs`, `ancestral_step`).
    has_discrete_chain = False

    def ancestral_step(self, x: jax.Array, score: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(x_mean, std) of one ancestral step of the chain from step i = timestep(t) to i - 1."""
        raise NotImplementedError(f"{type(self).__name__} has no discrete chain to sample ancestrally.")

    def langevin_alpha(self, t: jax.Array) -> jax.Array:
        """score_sde's step-size factor of the Langevin corrector: 1 - beta_i on the VP chain, else 1."""
        return jnp.ones_like(t)

    # --- how a network is conditioned on time (score_sde's conventions, one place) --------------

    #: What the network outputs under score_sde's parameterisation: 'epsilon' (the noise of
    #: x_t = alpha x_0 + sigma eps) or 'score' (optionally times sigma, config.model.scale_by_sigma).
    default_prediction: str = "epsilon"

    def continuous_label(self, t: jax.Array) -> jax.Array:
        """The network's conditioning input of a continuous-time model: 999 t (score_sde's VP / sub-VP)."""
        return 999.0 * t

    def network_step(self, t: jax.Array) -> jax.Array:
        """The chain step i a discrete-time network at time t is trained for (its sigma is sigma_i).

        'floor_index' and score_sde's VP: timestep(t) = floor(t (N-1) / T).
        """
        return self.timestep(t)

    def score_sde_label(self, t: jax.Array) -> jax.Array:
        """score_sde's discrete-time label for VP: t (N-1) / T, unrounded (its sigma rounds down)."""
        return t * (self.N - 1) / self.T

    def noise_label(self, t: jax.Array, continuous: bool = True) -> jax.Array:
        """c(t), the time conditioning a network is fed (float32, shape (B,)):

        continuous   `continuous_label(t)`: 999 t (VP, sub-VP) or sigma(t) (VE);
        discrete     with discrete_labels='score_sde', `score_sde_label(t)`: t (N-1) / T (VP) or
                     round((T - t)(N-1) / T), an index into the descending sigmas (VE);
                     with 'floor_index', network_step(t) = floor(t (N-1) / T), counted from the data.
        """
        if continuous:
            label = self.continuous_label(t)
        elif self.discrete_labels == "floor_index":
            label = self.network_step(t)
        else:
            label = self.score_sde_label(t)
        return jnp.asarray(label, jnp.float32)

    def perturbation_coeffs(self, t: jax.Array, continuous: bool = True) -> tuple[jax.Array, jax.Array]:
        """(alpha, sigma) a model conditioned on t was trained at: marginal_coeffs(t), or for a discrete-time
        model (continuous=False) the chain's discrete_marginal_coeffs(network_step(t))."""
        return self.marginal_coeffs(t) if continuous else self.discrete_marginal_coeffs(self.network_step(t))

    def log_snr(self, t: jax.Array) -> jax.Array:
        """lambda(t) = log(alpha(t) / sigma(t)), half the log signal-to-noise ratio; decreasing in t.

        EDM's noise level is sigma(t) / alpha(t) = exp(-lambda(t)).
        """
        alpha, sigma = self.marginal_coeffs(t)
        return jnp.log(alpha) - jnp.log(sigma)

    def t_from_log_snr(self, lam: jax.Array) -> jax.Array:
        """The time t with log_snr(t) == lam (the fast solvers' grids are uniform in lambda or in exp(-lambda))."""
        raise NotImplementedError(f"{type(self).__name__} does not give t_from_log_snr, which this sampler needs.")

    def discretize(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One step of the discrete forward process, x_{i+1} = x_i + f_i + G_i z_i.

        Default: Euler-Maruyama with dt = T / N, f_i = f(x, t) dt, G_i = g(t) sqrt(dt).
        """
        dt = self.T / self.N
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * np.sqrt(dt)

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> "ReverseSDE":
        """The reverse-time SDE (or its probability-flow ODE) driven by score_fn."""
        return ReverseSDE(self, score_fn, probability_flow)


@dataclasses.dataclass(frozen=True)
class ReverseSDE:
    """Reverse-time process of `forward` (Anderson, 1982), run from t = T to 0:

        dx = [f(x, t) - g(t)^2 s(x, t)] dt + g(t) dw_bar           (SDE)
        dx = [f(x, t) - 1/2 g(t)^2 s(x, t)] dt                     (probability flow)

    with s = score_fn ~ grad_x log p_t(x). Time runs backwards, so a sampler
    steps x <- x - drift * dt + diffusion * sqrt(dt) z.
    """

    forward: SDE
    score_fn: ScoreFn
    probability_flow: bool = False

    @property
    def T(self) -> float:
        return self.forward.T

    @property
    def N(self) -> int:
        return self.forward.N

    @property
    def _score_weight(self) -> float:
        return 0.5 if self.probability_flow else 1.0

    def sde(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        drift, diffusion = self.forward.sde(x, t)
        drift = drift - batch_mul(diffusion**2, self.score_fn(x, t)) * self._score_weight
        return drift, jnp.zeros_like(diffusion) if self.probability_flow else diffusion

    def discretize(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Reverse of the discrete chain: f_rev = f - G^2 s (halved for the flow), G_rev = G (0 for the flow)."""
        f, G = self.forward.discretize(x, t)
        rev_f = f - batch_mul(G**2, self.score_fn(x, t)) * self._score_weight
        return rev_f, jnp.zeros_like(G) if self.probability_flow else G


@dataclasses.dataclass(frozen=True)
class LinearSchedule:
    """beta(t) = beta_min + t (beta_max - beta_min) (Ho et al. 2020; Song et al. 2021); its chain has
    betas linspace(beta_min / N, beta_max / N, N)."""

    beta_min: float
    beta_max: float
    T = 1.0

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t):
        """-1/2 int_0^t beta = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def t_from_log_alpha(self, log_alpha):
        """The root t >= 0 of a t^2 + b t = c, a = (beta_max - beta_min) / 4, b = beta_min / 2, c = -log alpha,
        written t = 2c / (b + sqrt(b^2 + 4ac)) (stable as a -> 0)."""
        a, b, c = 0.25 * (self.beta_max - self.beta_min), 0.5 * self.beta_min, -log_alpha
        return 2.0 * c / (b + jnp.sqrt(b**2 + 4.0 * a * c))

    def discrete_betas(self, N: int) -> np.ndarray:
        return np.linspace(self.beta_min / N, self.beta_max / N, N)


@dataclasses.dataclass(frozen=True)
class ScaledLinearSchedule:
    """Linear in sqrt(beta) (Stable Diffusion's "scaled_linear"): with a = sqrt(beta_min), b = sqrt(beta_max),

        beta(t) = (a + t (b - a))^2,   int_0^t beta = ((a + t (b - a))^3 - a^3) / (3 (b - a)),

    and the chain beta_i = (sqrt(beta_min / N) + i (sqrt(beta_max / N) - sqrt(beta_min / N)) / (N-1))^2
    = beta(i / (N-1)) / N; beta_min = 0.85, beta_max = 12, N = 1000 give SD's 0.00085 ... 0.012.
    """

    beta_min: float
    beta_max: float
    T = 1.0

    def _ab(self):
        return np.sqrt(self.beta_min), np.sqrt(self.beta_max)

    def beta(self, t):
        a, b = self._ab()
        return (a + t * (b - a)) ** 2

    def log_alpha(self, t):
        a, b = self._ab()
        return -((a + t * (b - a)) ** 3 - a**3) / (6.0 * (b - a))

    def t_from_log_alpha(self, log_alpha):
        """(a + t (b - a))^3 = a^3 - 6 (b - a) log alpha, solved for t."""
        a, b = self._ab()
        return (jnp.cbrt(a**3 - 6.0 * (b - a) * log_alpha) - a) / (b - a)

    def discrete_betas(self, N: int) -> np.ndarray:
        return self.beta(np.linspace(0.0, 1.0, N)) / N


@dataclasses.dataclass(frozen=True)
class CosineSchedule:
    """Nichol & Dhariwal (2021): alpha_bar(t) = cos^2(phi(t)) / cos^2(phi(0)), phi(t) = (t + s) / (1 + s) pi / 2,

        log alpha(t) = log cos phi(t) - log cos phi(0),   beta(t) = -d log alpha_bar / dt = pi tan(phi(t)) / (1 + s).

    beta -> inf as t -> 1, so the SDE ends at T < 1 where beta(T) = 999 (as DPM-Solver's NoiseScheduleVP);
    there alpha(T) ~ 3e-3. The chain is beta_i = min(1 - alpha_bar((i+1)/N) / alpha_bar(i/N), 0.999).
    """

    s: float = 0.008
    beta_end: float = 999.0

    def _phi(self, t):
        return (t + self.s) / (1.0 + self.s) * (np.pi / 2)

    @property
    def T(self) -> float:
        return float(np.arctan(self.beta_end * (1.0 + self.s) / np.pi) * 2.0 * (1.0 + self.s) / np.pi - self.s)

    def beta(self, t):
        return np.pi * jnp.tan(self._phi(t)) / (1.0 + self.s)

    def log_alpha(self, t):
        """With d = phi(t) - phi(0): cos phi(t) / cos phi(0) = cos d - tan phi(0) sin d, exactly 1 at t = 0."""
        d = t * (np.pi / 2) / (1.0 + self.s)
        return jnp.log1p(-2.0 * jnp.sin(d / 2) ** 2 - np.tan(self._phi(0.0)) * jnp.sin(d))

    def t_from_log_alpha(self, log_alpha):
        """cos phi(t) = alpha cos phi(0), solved for t."""
        phi = jnp.arccos(jnp.exp(log_alpha) * np.cos(self._phi(0.0)))
        return phi * 2.0 * (1.0 + self.s) / np.pi - self.s

    def discrete_betas(self, N: int) -> np.ndarray:
        alpha_bar = np.cos(self._phi(np.linspace(0.0, 1.0, N + 1))) ** 2
        return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.999)


#: config.model.beta_schedule -> schedule, built from (beta_min, beta_max) (the cosine schedule has none).
BETA_SCHEDULES = {"linear": LinearSchedule, "scaled_linear": ScaledLinearSchedule,
                  "cosine": lambda beta_min, beta_max: CosineSchedule()}


@dataclasses.dataclass(frozen=True)
class _BetaScheduleSDE(SDE):
    """Shared by the VP and sub-VP SDEs: drift f(x, t) = -1/2 beta(t) x, alpha(t) = exp(-1/2 int_0^t beta(s) ds),
    beta(t) from the schedule named by `beta_schedule` (BETA_SCHEDULES)."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    N: int = 1000
    discrete_labels: str = "score_sde"
    beta_schedule: str = "linear"

    def __post_init__(self):
        super().__post_init__()
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"Unknown beta_schedule {self.beta_schedule!r} (config.model.beta_schedule); "
                             f"choose one of {sorted(BETA_SCHEDULES)}.")

    @functools.cached_property
    def schedule(self):
        return BETA_SCHEDULES[self.beta_schedule](self.beta_min, self.beta_max)

    @property
    def T(self) -> float:
        return self.schedule.T

    def beta(self, t):
        return self.schedule.beta(t)

    def log_alpha(self, t):
        return self.schedule.log_alpha(t)

    def t_from_log_alpha(self, log_alpha):
        return self.schedule.t_from_log_alpha(log_alpha)

    def drift(self, x, t):
        return batch_mul(-0.5 * self.beta(t), x)

    @property
    def prior_scale(self) -> float:
        return 1.0


@dataclasses.dataclass(frozen=True)
class VPSDE(_BetaScheduleSDE):
    """Variance-preserving SDE (the continuous limit of DDPM):

        dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw,   sigma(t)^2 = 1 - alpha(t)^2.

    Its discretization is the DDPM Markov chain with the schedule's betas (linear:
    linspace(beta_min/N, beta_max/N, N)).
    """

    def sde(self, x, t):
        return self.drift(x, t), jnp.sqrt(self.beta(t))

    def marginal_coeffs(self, t):
        log_alpha = self.log_alpha(t)
        return jnp.exp(log_alpha), jnp.sqrt(-jnp.expm1(2.0 * log_alpha))

    def t_from_log_snr(self, lam):
        """alpha^2 = 1 / (1 + exp(-2 lambda)), so -log alpha = 1/2 softplus(-2 lambda); then t_from_log_alpha."""
        return self.t_from_log_alpha(-0.5 * jax.nn.softplus(-2.0 * lam))

    # The DDPM chain as numpy tables (never jax arrays: they are cached and may
    # first be touched inside a jit trace).
    @functools.cached_property
    def discrete_betas(self) -> np.ndarray:
        return self.schedule.discrete_betas(self.N)

    @functools.cached_property
    def alphas_cumprod(self) -> np.ndarray:
        """alpha_bar_i = prod_{j <= i} (1 - beta_j)."""
        return np.cumprod(1.0 - self.discrete_betas)

    def discrete_marginal_coeffs(self, i):
        """(sqrt(alpha_bar_i), sqrt(1 - alpha_bar_i)): x_i = sqrt(alpha_bar_i) x_0 + sqrt(1 - alpha_bar_i) z
        (tabulated in float64: 1 - alpha_bar_i cancels badly in float32 for small i)."""
        alpha_bar = self.alphas_cumprod
        table = jnp.asarray(np.stack([np.sqrt(alpha_bar), np.sqrt(1.0 - alpha_bar)]), jnp.float32)
        return table[0][i], table[1][i]

    def discretize(self, x, t):
        """DDPM step x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i) z, as (f, G)."""
        beta = self._beta_at(t)
        return batch_mul(jnp.sqrt(1.0 - beta), x) - x, jnp.sqrt(beta)

    has_discrete_chain = True

    def _beta_at(self, t):
        return jnp.asarray(self.discrete_betas, jnp.float32)[self.timestep(t)]

    def ancestral_step(self, x, score, t):
        """DDPM: x_mean = (x + beta_i s) / sqrt(1 - beta_i), std = sqrt(beta_i)."""
        beta = self._beta_at(t)
        return batch_mul(1.0 / jnp.sqrt(1.0 - beta), x + batch_mul(beta, score)), jnp.sqrt(beta)

    def langevin_alpha(self, t):
        return 1.0 - self._beta_at(t)


@dataclasses.dataclass(frozen=True)
class subVPSDE(_BetaScheduleSDE):
    """Sub-variance-preserving SDE (Song et al. 2021, eq. 29):

        dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta(s) ds))) dw,
        sigma(t) = 1 - alpha(t)^2.

    It has no discrete chain of its own: `discretize` is Euler-Maruyama.
    """

    def sde(self, x, t):
        discount = -jnp.expm1(4.0 * self.log_alpha(t))
        return self.drift(x, t), jnp.sqrt(self.beta(t) * discount)

    def marginal_coeffs(self, t):
        log_alpha = self.log_alpha(t)
        return jnp.exp(log_alpha), -jnp.expm1(2.0 * log_alpha)

    def t_from_log_snr(self, lam):
        """alpha / (1 - alpha^2) = exp(lambda) has the root alpha = 2r / (1 + sqrt(1 + 4r^2)), r = exp(lambda),
        i.e. -log alpha = asinh(exp(-lambda) / 2); then t_from_log_alpha."""
        return self.t_from_log_alpha(-jnp.arcsinh(0.5 * jnp.exp(-lam)))


@dataclasses.dataclass(frozen=True)
class VESDE(SDE):
    """Variance-exploding SDE (the continuous limit of SMLD / NCSN):

        dx = sigma(t) sqrt(2 log(sigma_max / sigma_min)) dw,   sigma(t) = sigma_min (sigma_max / sigma_min)^t,
        alpha(t) = 1.

    Its discretization is the SMLD chain over the geometric sigmas
    exp(linspace(log sigma_min, log sigma_max, N)).
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    N: int = 1000
    sampling_eps: float = 1e-5
    discrete_labels: str = "score_sde"
    default_prediction = "score"

    def continuous_label(self, t):
        """score_sde conditions a continuous-time VE network on sigma(t)."""
        return self.sigma(t)

    def score_sde_label(self, t):
        """round((T - t)(N-1) / T): score_sde's index into the descending sigmas (t = T is index 0)."""
        return jnp.clip(jnp.round((self.T - t) * (self.N - 1) / self.T), 0, self.N - 1).astype(jnp.int32)

    def network_step(self, t):
        """'score_sde': N-1 - score_sde_label(t) (its sigma, counted from the data); 'floor_index': timestep(t)."""
        return self.timestep(t) if self.discrete_labels == "floor_index" else self.N - 1 - self.score_sde_label(t)

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def sde(self, x, t):
        diffusion = self.sigma(t) * np.sqrt(2 * np.log(self.sigma_max / self.sigma_min))
        return jnp.zeros_like(x), diffusion

    def marginal_coeffs(self, t):
        return jnp.ones_like(t), self.sigma(t)

    def t_from_log_snr(self, lam):
        """lambda = -log sigma(t), so t = (-lambda - log sigma_min) / log(sigma_max / sigma_min)."""
        return (-lam - np.log(self.sigma_min)) / np.log(self.sigma_max / self.sigma_min)

    @property
    def prior_scale(self) -> float:
        return self.sigma_max

    @functools.cached_property
    def discrete_sigmas(self) -> np.ndarray:
        """Ascending SMLD noise levels sigma_0 = sigma_min < ... < sigma_{N-1} = sigma_max."""
        return np.exp(np.linspace(np.log(self.sigma_min), np.log(self.sigma_max), self.N))

    def discrete_marginal_coeffs(self, i):
        """(1, sigma_i): x_i = x_0 + sigma_i z."""
        sigma = jnp.asarray(self.discrete_sigmas, jnp.float32)[i]
        return jnp.ones_like(sigma), sigma

    has_discrete_chain = True

    def _sigma_and_previous(self, t):
        """(sigma_i, sigma_{i-1}) at i = timestep(t), with sigma_{-1} = 0."""
        i = self.timestep(t)
        sigmas = jnp.asarray(self.discrete_sigmas, jnp.float32)
        return sigmas[i], jnp.where(i == 0, 0.0, sigmas[jnp.maximum(i - 1, 0)])

    def discretize(self, x, t):
        """SMLD step x_{i+1} = x_i + sqrt(sigma_{i+1}^2 - sigma_i^2) z (sigma_{-1} = 0), as (f, G)."""
        sigma, previous = self._sigma_and_previous(t)
        return jnp.zeros_like(x), jnp.sqrt(sigma**2 - previous**2)

    def ancestral_step(self, x, score, t):
        """SMLD: x_mean = x + (sigma_i^2 - sigma_{i-1}^2) s, std = sqrt(sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2) / sigma_i^2)."""
        sigma, previous = self._sigma_and_previous(t)
        return x + batch_mul(sigma**2 - previous**2, score), jnp.sqrt(previous**2 * (sigma**2 - previous**2) / sigma**2)


SDES = {"vpsde": VPSDE, "subvpsde": subVPSDE, "vesde": VESDE}


class Restarted:
    """`base` restarted from inputs x_0 (SDEdit, Meng et al. 2022): a sampler built on it runs the base's reverse
    process over [eps, t_s] from the forward marginal

        x_{t_s} = alpha(t_s) x_0 + sigma(t_s) z,   z ~ N(0, I),   t_s = n_s T / (N - 1),   n_s = round(s (N - 1)),

    instead of over [eps, T] from the prior; s in (0, 1] is the strength (s = 1 starts at T, where the input is
    all but forgotten). Only T = t_s, N = n_s + 1 (the chain steps at and below t_s, on which chain-following
    samplers then step) and prior_sampling are its own; everything else is the base's, at the same absolute
    times, so networks, chains and discretisations are unchanged.
    """

    def __init__(self, base: SDE, strength: float, x0: jax.Array):
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"The strength of a restart (config.sampling.strength) must lie in (0, 1], got "
                             f"{strength}.")
        steps = round(strength * (base.N - 1))
        if steps * base.T / (base.N - 1) <= base.sampling_eps:
            raise ValueError(f"The strength {strength} starts at or below the smallest sampling time "
                             f"{base.sampling_eps} of the {base.N}-step SDE; use at least {2 / (base.N - 1):.3g}.")
        self.base, self.x0, self.N, self.T = base, x0, steps + 1, steps * base.T / (base.N - 1)

    def __getattr__(self, name):
        return getattr(self.base, name)

    def prior_sampling(self, rng: jax.Array, shape) -> jax.Array:
        if tuple(shape) != tuple(self.x0.shape):
            raise ValueError(f"A restart draws samples of its inputs' shape {tuple(self.x0.shape)}, not "
                             f"{tuple(shape)}.")
        alpha, sigma = self.base.marginal_coeffs(jnp.full((shape[0],), self.T))
        return batch_mul(alpha, self.x0) + batch_mul(sigma, jax.random.normal(rng, shape))


def from_config(config) -> SDE:
    """The SDE named by config.training.sde, with its constants from config.model."""
    name = config.training.sde.lower()
    if name not in SDES:
        raise ValueError(f"Unknown SDE {config.training.sde!r} in config.training.sde; choose one of {sorted(SDES)}.")
    m = config.model
    labels = m.discrete_labels
    if name == "vesde":
        return VESDE(sigma_min=m.sigma_min, sigma_max=m.sigma_max, N=m.num_scales, discrete_labels=labels)
    return SDES[name](beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales, discrete_labels=labels,
                      beta_schedule=m.beta_schedule)
