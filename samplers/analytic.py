"""A Gaussian-mixture data distribution whose score is known in closed form under every SDE.

With p_0 = sum_k w_k N(mu_k, C_k) on R^D and x_t = alpha x_0 + sigma z,

    p_t = sum_k w_k N(alpha mu_k, Sigma_k),   Sigma_k = alpha^2 C_k + sigma^2 I,

so the perturbed marginal is a mixture with the same weights. Writing
C_k = U_k diag(l_k) U_k^T once, Sigma_k = U_k diag(v_k) U_k^T with
v_k = alpha^2 l_k + sigma^2, which gives inverses and log-determinants for free.
The score is the responsibility-weighted sum of the component scores,

    grad log p_t(x) = sum_k r_k(x) s_k(x),   r_k = softmax_k(log w_k + log N_k(x)),
    s_k(x) = -Sigma_k^{-1} (x - alpha mu_k),

with r_k computed by a softmax (logsumexp-stable). Per-component densities
and scores are public; with component k as class k, `score_fn_for_labels`
gives the exact class-conditional scores (the mixture for the null label K)
and `class_log_prob_fn` the exact noise-conditional classifier log r_k(x), the
analytic targets of the guidance tests. Used by the sampler and likelihood
tests and by benchmarks/samplers.py.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
    """sum_k weights[k] N(means[k], covs[k]); weights (K,), means (K, D), covs (K, D, D) symmetric positive definite."""

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray

    def __post_init__(self):
        w, m, c = (np.asarray(a, np.float64) for a in (self.weights, self.means, self.covs))
        if w.ndim != 1 or m.shape != (len(w), m.shape[-1]) or c.shape != m.shape + m.shape[-1:]:
            raise ValueError(f"Need weights (K,), means (K, D), covs (K, D, D); got {w.shape}, {m.shape}, {c.shape}.")
        if np.any(w <= 0) or abs(w.sum() - 1.0) > 1e-6:
            raise ValueError(f"Mixture weights must be positive and sum to 1, got {w}.")
        eigvals, eigvecs = np.linalg.eigh(c)
        if np.any(eigvals <= 0):
            raise ValueError("Every component covariance must be positive definite.")
        for name, value in (("weights", w), ("means", m), ("covs", c), ("_eigvals", eigvals), ("_eigvecs", eigvecs)):
            object.__setattr__(self, name, value)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _whitened(self, x, alpha, sigma):
        """y_k = U_k^T (x - alpha mu_k) (B, K, D) and the variances v_k = alpha^2 l_k + sigma^2 (B, K, D)."""
        alpha, sigma = jnp.reshape(alpha, (-1, 1, 1)), jnp.reshape(sigma, (-1, 1, 1))
        diff = x[:, None, :] - alpha * jnp.asarray(self.means, x.dtype)
        y = jnp.einsum("kdj,bkd->bkj", jnp.asarray(self._eigvecs, x.dtype), diff)
        return y, alpha**2 * jnp.asarray(self._eigvals, x.dtype) + sigma**2

    def component_log_probs(self, x, alpha, sigma):
        """log N(x; alpha mu_k, Sigma_k) for x (B, D), per-example alpha, sigma (B,): shape (B, K), no weights."""
        y, v = self._whitened(x, alpha, sigma)
        return -0.5 * jnp.sum(y**2 / v + jnp.log(2 * np.pi * v), axis=-1)

    def component_scores(self, x, alpha, sigma):
        """s_k(x) = -Sigma_k^{-1} (x - alpha mu_k): shape (B, K, D)."""
        y, v = self._whitened(x, alpha, sigma)
        return -jnp.einsum("kdj,bkj->bkd", jnp.asarray(self._eigvecs, x.dtype), y / v)

    def responsibilities(self, x, alpha, sigma):
        """r_k(x) = w_k N_k(x) / p_t(x): shape (B, K)."""
        return jax.nn.softmax(jnp.log(jnp.asarray(self.weights, x.dtype)) + self.component_log_probs(x, alpha, sigma))

    def log_prob(self, x, alpha, sigma):
        """log p_t(x) = logsumexp_k(log w_k + log N_k(x)): shape (B,)."""
        return jax.nn.logsumexp(jnp.log(jnp.asarray(self.weights, x.dtype)) + self.component_log_probs(x, alpha, sigma),
                                axis=-1)

    def score(self, x, alpha, sigma):
        """grad_x log p_t(x) = sum_k r_k s_k: shape (B, D)."""
        return jnp.einsum("bk,bkd->bd", self.responsibilities(x, alpha, sigma), self.component_scores(x, alpha, sigma))

    def score_fn(self, sde: sde_lib.SDE, continuous: bool = True):
        """The exact score_fn(x, t) of p_t under `sde`, x of shape (B, D) or (B, ...) with D trailing elements.

        continuous=False uses the SDE's discrete chain, (alpha_i, sigma_i) at i = sde.timestep(t): the exact
        score of what a discrete-time model (models.get_score_fn(..., continuous=False)) learns.
        """
        return self.score_fn_for_labels(sde, continuous)(None)

    def score_fn_for_labels(self, sde: sde_lib.SDE, continuous: bool = True):
        """labels -> the exact class-conditional score_fn(x, t) with component k as class k:

            grad log p_t(x | y) = s_y(x) for y < K,   grad log p_t(x) (the mixture) for the null label y = K,

        and the mixture score for labels None: the analytic twin of models.get_score_fn(..., labels=labels).
        """
        num_components = len(self.weights)

        def for_labels(labels):
            def score_fn(x, t):
                alpha, sigma = sde.perturbation_coeffs(t, continuous)
                flat = jnp.reshape(x, (x.shape[0], -1))
                mixture = self.score(flat, alpha, sigma)
                if labels is not None:
                    y = jnp.asarray(labels, jnp.int32)
                    component = jnp.take_along_axis(self.component_scores(flat, alpha, sigma),
                                                    jnp.minimum(y, num_components - 1)[:, None, None], axis=1)[:, 0]
                    mixture = jnp.where((y < num_components)[:, None], component, mixture)
                return jnp.reshape(mixture, x.shape)

            return score_fn

        return for_labels

    def class_log_prob_fn(self, sde: sde_lib.SDE, continuous: bool = True):
        """The exact noise-conditional classifier (x, t) -> log p_t(y = k | x) = log r_k(x): shape (B, K)."""
        def log_prob_fn(x, t):
            alpha, sigma = sde.perturbation_coeffs(t, continuous)
            flat = jnp.reshape(x, (x.shape[0], -1))
            return jax.nn.log_softmax(jnp.log(jnp.asarray(self.weights, x.dtype))
                                      + self.component_log_probs(flat, alpha, sigma))

        return log_prob_fn

    def moment_errors(self, x) -> dict:
        """How far samples x (n, D) are from this mixture, per statistic: {name: (estimate - truth, standard error)}.

        Each sample is assigned its most responsible component at t = 0; then, per component k
        with n_k samples, the weight n_k / n, mean and covariance are compared with w_k, mu_k, C_k.
        Standard errors are those of n exact samples, in closed form: sqrt(w (1 - w) / n) for a
        weight, sqrt(C_ii / n_k) for a mean, sqrt((C_ii C_jj + C_ij^2) / n_k) for a covariance entry
        (Gaussian fourth moments). Misassigned exact samples (components > 5 std apart) bias these by
        far less than one standard error.
        """
        x = np.asarray(x, np.float64)
        n = len(x)
        labels = np.argmax(np.asarray(self.responsibilities(jnp.asarray(x), jnp.ones(n), jnp.zeros(n))), axis=-1)
        errors = {}
        for k, (w, mu, cov) in enumerate(zip(self.weights, self.means, self.covs)):
            xk = x[labels == k]
            n_k = max(len(xk), 2)
            var = np.diag(cov)
            errors[f"weight[{k}]"] = (len(xk) / n - w, np.sqrt(w * (1 - w) / n))
            errors[f"mean[{k}]"] = (xk.mean(0) - mu if len(xk) else np.inf, np.sqrt(var / n_k))
            errors[f"cov[{k}]"] = (np.cov(xk.T) - cov if len(xk) > 1 else np.inf,
                                   np.sqrt((np.outer(var, var) + cov**2) / n_k))
        return errors

    def sample(self, rng, n: int):
        """n exact samples of p_0 and their component labels: ((n, D), (n,))."""
        rng_k, rng_z = jax.random.split(rng)
        labels = jax.random.choice(rng_k, len(self.weights), (n,), p=jnp.asarray(self.weights, jnp.float32))
        z = jax.random.normal(rng_z, (n, self.dim))
        scale = jnp.asarray(self._eigvecs * np.sqrt(self._eigvals)[:, None, :], jnp.float32)
        return jnp.asarray(self.means, jnp.float32)[labels] + jnp.einsum("nij,nj->ni", scale[labels], z), labels


def benchmark_mixture() -> GaussianMixture:
    """The 2-D, three-component target of the sampler tests and benchmark.

    Unequal weights, correlated and axis-aligned covariances of different scales
    (std 0.15-0.3), means ~2 apart: data of unit scale like images in [-1, 1], with
    modes separated by > 5 std so classifying a sample by its most responsible
    component is almost never wrong.
    """
    return GaussianMixture(
        weights=np.array([0.5, 0.3, 0.2]),
        means=np.array([[-1.0, -0.5], [1.0, -0.3], [0.0, 1.0]]),
        covs=np.array([[[0.09, 0.03], [0.03, 0.04]],
                       [[0.04, -0.02], [-0.02, 0.09]],
                       [[0.0625, 0.0], [0.0, 0.0225]]]),
    )
