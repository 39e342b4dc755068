"""The discrete VP chain's variational bound (losses/vlb.py) against closed forms and Monte Carlo.

Gaussian data x_0 ~ N(MU, S^2) per dimension make the bound exact to evaluate: the model with the exact eps,

    eps*(x_t) = E[eps | x_t] = sqrt(1 - alpha_bar_t) (x_t - sqrt(alpha_bar_t) MU) / v_t,
    v_t = alpha_bar_t S^2 + 1 - alpha_bar_t,

has reverse means linear in x_t, so every term of the bound is a quadratic in (x_0, noise). The expectation of a
quadratic in two independent standard normals is its average over the four sigma points (+-1, +-1), so the
expected bound over data and chain is four evaluations of each term: no Monte-Carlo error.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

import sde_lib
from losses import vlb

MU, S = 0.3, 0.5
GAUSSIAN_ENTROPY = 0.5 * np.log(2 * np.pi * np.e * S**2)  # nats per dimension
SIGMA_X, SIGMA_Z = np.array([1.0, 1.0, -1.0, -1.0]), np.array([1.0, -1.0, 1.0, -1.0])


def ddpm_chain(n):
    return vlb.DiscreteChain.from_sde(sde_lib.VPSDE(N=n))


def cosine_chain(n, s=0.008):
    """Nichol & Dhariwal's cosine schedule, a second, non-linear schedule."""
    f = np.cos((np.arange(n + 1) / n + s) / (1 + s) * np.pi / 2) ** 2
    return vlb.DiscreteChain(np.clip(1 - f[1:] / f[:-1], 1e-8, 0.999))


def exact_eps(chain, mu=MU, s=S):
    def eps_fn(xt, i):
        ab = vlb._gather(chain.alphas_cumprod, i, xt)
        return jnp.sqrt(1 - ab) * (xt - jnp.sqrt(ab) * mu) / (ab * s**2 + 1 - ab)
    return eps_fn


def expected_terms(chain, variance):
    """E over x_0 ~ N(MU, S^2) and the chain of L_T and of each L_{t-1} (N,) with the exact eps and a Gaussian
    decoder, nats/dim (sigma points)."""
    x0, z = (MU + S * SIGMA_X)[:, None], SIGMA_Z[:, None]
    eps_fn = exact_eps(chain)

    def term(i):
        index = jnp.full((4,), i)
        xt = vlb.q_sample(chain, x0, index, z)
        return jnp.mean(vlb.vlb_term(chain, x0, xt, index, eps_fn(xt, index), variance, discrete=False))

    return float(jnp.mean(vlb.prior_kl(chain, x0))), jax.lax.map(term, jnp.arange(chain.N))


def expected_bound(chain, variance):
    prior, terms = expected_terms(chain, variance)
    return prior + float(jnp.sum(terms))


@pytest.mark.parametrize("chain", [ddpm_chain(1000), cosine_chain(50)], ids=["linear", "cosine"])
def test_forward_posterior_matches_the_simulated_chain(chain):
    """Simulate x_{t-1} ~ q(x_{t-1} | x_0) and x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) xi, then regress x_{t-1}
    on x_t: slope, intercept and residual variance are the posterior's coefficients and beta~_t."""
    rng, m, x0 = np.random.default_rng(0), 400_000, 0.7
    with jax.enable_x64(True):
        for i in [1, 2, chain.N // 2, chain.N - 1]:
            prev = (np.sqrt(chain.alphas_cumprod[i - 1]) * x0
                    + np.sqrt(chain.one_minus_alphas_cumprod[i - 1]) * rng.standard_normal(m))
            xt = np.sqrt(1 - chain.betas[i]) * prev + np.sqrt(chain.betas[i]) * rng.standard_normal(m)
            slope, intercept = np.polyfit(xt, prev, 1)
            residual_var = np.var(prev - slope * xt - intercept, ddof=2)
            slope_se = np.sqrt(residual_var / (m * np.var(xt)))
            intercept_se = np.sqrt(residual_var / m + (slope_se * np.mean(xt)) ** 2)
            index = jnp.full((2,), i)
            mean, var, log_var = vlb.q_posterior(chain, jnp.full((2, 1), x0), jnp.array([[0.0], [1.0]]), index)
            np.testing.assert_allclose(float(mean[1, 0] - mean[0, 0]), slope, rtol=0, atol=5 * slope_se)
            np.testing.assert_allclose(float(mean[0, 0]), intercept, rtol=0, atol=5 * intercept_se)
            np.testing.assert_allclose(float(var[0, 0]), residual_var, rtol=5 * np.sqrt(2 / m))
            np.testing.assert_allclose(float(log_var[0, 0]), np.log(float(var[0, 0])), rtol=1e-12)
        mean, var, log_var = vlb.q_posterior(chain, jnp.full((1, 1), x0), jnp.ones((1, 1)), jnp.zeros(1, int))
        assert float(mean[0, 0]) == pytest.approx(x0) and float(var[0, 0]) == 0.0
        assert float(log_var[0, 0]) == pytest.approx(np.log(chain.posterior_variance[1]))  # clipped at t = 1


def test_reverse_mean_is_the_posterior_mean_at_the_predicted_x0():
    chain, key = cosine_chain(50), jax.random.PRNGKey(0)
    xt, eps = jax.random.normal(key, (2, 50, 3))
    i = jnp.arange(50)
    mean, _ = vlb.p_mean_log_variance(chain, xt, i, eps, "small")
    expected = vlb.q_posterior(chain, vlb.predict_x0(chain, xt, i, eps), xt, i)[0]
    np.testing.assert_allclose(mean, expected, rtol=2e-4, atol=2e-4)


def test_learned_variance_interpolates_between_posterior_and_forward_variance():
    chain, n = ddpm_chain(1000), 1000
    i, x = jnp.arange(n), jnp.zeros((n, 2))
    for v_raw, table in [(-1.0, chain.posterior_log_variance), (1.0, np.log(chain.betas))]:
        _, log_var = vlb.p_mean_log_variance(chain, x, i, x, "learned", jnp.full_like(x, v_raw))
        np.testing.assert_allclose(log_var[:, 0], table, rtol=1e-6)
        np.testing.assert_allclose(vlb.interpolated_log_variance(chain, i, jnp.full((n,), (v_raw + 1) / 2)), table,
                                   rtol=1e-6)
    np.testing.assert_allclose(np.exp(chain.posterior_log_variance[1:]), chain.posterior_variance[1:], rtol=1e-12)
    _, small = vlb.p_mean_log_variance(chain, x, i, x, "small")
    _, large = vlb.p_mean_log_variance(chain, x, i, x, "large")
    _, half = vlb.p_mean_log_variance(chain, x, i, x, "learned", jnp.zeros_like(x))
    np.testing.assert_allclose(half, 0.5 * (small + large), rtol=1e-6)
    eps, v_raw = vlb.split_output(jnp.concatenate([jnp.ones((1, 4, 4, 3)), -jnp.ones((1, 4, 4, 3))], -1))
    assert eps.shape == v_raw.shape == (1, 4, 4, 3) and float(eps.min()) == 1 and float(v_raw.max()) == -1


def _numeric_kl(m1, v1, m2, v2):
    p, q = stats.norm(m1, np.sqrt(v1)), stats.norm(m2, np.sqrt(v2))
    lo, hi = m1 - 20 * np.sqrt(v1), m1 + 20 * np.sqrt(v1)
    return integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), lo, hi, points=[m1], limit=200)[0]


def test_kl_terms_match_numerical_integration():
    with jax.enable_x64(True):
        for m1, v1, m2, v2 in [(0.0, 1.0, 0.0, 1.0), (0.3, 0.2, -0.4, 1.7), (1.0, 1e-3, 1.02, 2e-3)]:
            kl = vlb.normal_kl(m1, np.log(v1), m2, np.log(v2))
            np.testing.assert_allclose(float(kl), _numeric_kl(m1, v1, m2, v2), rtol=1e-7, atol=1e-10)
        chain, x0, xt = cosine_chain(50), jnp.array([[0.4]]), jnp.array([[-0.1]])
        for i, variance, v_raw in [(1, "small", None), (10, "large", None), (30, "learned", jnp.array([[0.3]]))]:
            index, eps = jnp.array([i]), jnp.array([[0.8]])
            term = vlb.vlb_term(chain, x0, xt, index, eps, variance, v_raw, discrete=False)
            _, var, _ = vlb.q_posterior(chain, x0, xt, index)
            true_mean = chain.posterior_mean_coefs[0][i] * 0.4 + chain.posterior_mean_coefs[1][i] * -0.1
            x0_hat = (-0.1 - np.sqrt(chain.one_minus_alphas_cumprod[i]) * 0.8) / np.sqrt(chain.alphas_cumprod[i])
            model_mean = chain.posterior_mean_coefs[0][i] * x0_hat + chain.posterior_mean_coefs[1][i] * -0.1
            v = {"small": 0.0, "large": 1.0, "learned": 0.65}[variance]
            model_var = chain.betas[i] ** v * chain.posterior_variance[i] ** (1 - v)
            np.testing.assert_allclose(float(term[0]), _numeric_kl(true_mean, float(var[0, 0]), model_mean, model_var),
                                       rtol=1e-7)
        prior = vlb.prior_kl(chain, x0)
        ab = chain.alphas_cumprod[-1]
        np.testing.assert_allclose(float(prior[0]), _numeric_kl(np.sqrt(ab) * 0.4, 1 - ab, 0.0, 1.0), rtol=1e-7)


DECODER_CASES = [(0.0, 0.1), (0.37, 1e-3), (-0.9, 0.5), (2.5, 0.05), (-1.0, 1e-4), (0.0, 3.0), (1.0, 3e-6)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_decoder_bins_sum_to_one(dtype):
    grid = np.arange(256) / 127.5 - 1.0
    with jax.enable_x64(dtype == "float64"):
        for mean, std in DECODER_CASES:
            x = jnp.asarray(grid, dtype)
            log_var = jnp.asarray(2 * np.log(std), dtype)
            log_p = vlb.discretized_gaussian_log_likelihood(x, jnp.asarray(mean, dtype), log_var)
            assert np.all(np.isfinite(log_p)), (mean, std)
            assert abs(float(jax.scipy.special.logsumexp(log_p))) < (1e-5 if dtype == "float32" else 1e-12), (mean, std)


def _reference_log_bin(a, b):
    """log int_a^b phi(u) du by quadrature, with phi factored out at the bin's point c nearest 0 (no underflow)."""
    c = a if a > 0 else (b if b < 0 else 0.0)
    integral = integrate.quad(lambda u: np.exp(-0.5 * (u - c) * (u + c)), a, b, epsabs=0.0, epsrel=1e-13, limit=200)[0]
    return -0.5 * c * c - 0.5 * np.log(2 * np.pi) + np.log(integral)


def test_decoder_matches_quadrature_including_far_tails():
    """Bins against quadrature of the normal density; in the far tails (log P down to -2e4) a difference of CDFs
    would be log 0, and the relative error stays at float64 round-off."""
    grid = np.arange(256) / 127.5 - 1.0
    with jax.enable_x64(True):
        for mean, std in [(0.0, 0.1), (-1.0, 0.01), (0.8, 2e-3)]:
            log_p = vlb.discretized_gaussian_log_likelihood(jnp.asarray(grid), mean, 2 * np.log(std))
            for k in [0, 1, 77, 128, 200, 254, 255]:
                a = -np.inf if k == 0 else (grid[k] - 1 / 255 - mean) / std
                b = np.inf if k == 255 else (grid[k] + 1 / 255 - mean) / std
                np.testing.assert_allclose(float(log_p[k]), _reference_log_bin(a, b), rtol=1e-9,
                                           err_msg=str((mean, std, k)))


def test_decoder_gradients_are_finite_on_every_bin():
    grid = jnp.arange(256) / 127.5 - 1.0
    for mean, std in DECODER_CASES:
        g_mean, g_log_var = jax.grad(lambda m, lv: jnp.sum(vlb.discretized_gaussian_log_likelihood(grid, m, lv)),
                                     argnums=(0, 1))(jnp.float32(mean), jnp.float32(2 * np.log(std)))
        assert np.isfinite(g_mean) and np.isfinite(g_log_var), (mean, std)


def analytic_expected_bound(chain, variance):
    """The same expectation by hand: E[(mu~ - mu)^2] = c0_t^2 Var[x_0 | x_t] with
    Var[x_0 | x_t] = S^2 (1 - alpha_bar_t) / v_t (the exact model's mean is mu~ at x_0 = E[x_0 | x_t]), and the
    decoder's E[(x_0 - mu)^2] = Var[x_0 | x_1]."""
    ab, one_minus = chain.alphas_cumprod, chain.one_minus_alphas_cumprod
    post_var = S**2 * one_minus / (ab * S**2 + one_minus)
    log_var = np.log(chain.betas) if variance == "large" else chain.posterior_log_variance
    mse = chain.posterior_mean_coefs[0] ** 2 * post_var
    true_log_var = np.log(np.append(1.0, chain.posterior_variance[1:]))
    kls = 0.5 * (log_var - true_log_var + np.exp(true_log_var - log_var) + mse * np.exp(-log_var) - 1.0)
    decoder = 0.5 * (np.log(2 * np.pi) + log_var[0] + post_var[0] * np.exp(-log_var[0]))
    prior = 0.5 * (one_minus[-1] + ab[-1] * (MU**2 + S**2) - 1.0 - np.log(one_minus[-1]))
    return prior + decoder + np.sum(kls[1:])


@pytest.mark.parametrize("variance", ["large", "small"])
def test_gaussian_data_bound_exceeds_the_entropy_and_tightens_with_more_steps(variance):
    """E[bound] >= E[-log p_theta(x_0)] >= H(data) = 1/2 log(2 pi e S^2); with the exact posterior-mean model the gap
    shrinks from N = 100 to N = 1000 (linear schedule, VPSDE's betas). Measured (nats/dim): 'large' 0.010962 ->
    0.0010941 (~1/N: the true reverse variance is ~beta_t where the data are smooth on the noise scale); 'small'
    1.2722 -> 0.5699 (beta~_t is too small near t = 1, where each step's KL is ~1 / (2 (t - 1)))."""
    gaps = {}
    with jax.enable_x64(True):
        for n in (100, 1000):
            chain = ddpm_chain(n)
            bound = expected_bound(chain, variance)
            np.testing.assert_allclose(bound, analytic_expected_bound(chain, variance), rtol=1e-10)
            gaps[n] = bound - GAUSSIAN_ENTROPY
    print(f"{variance}: gap N=100 {gaps[100]:.6g}, N=1000 {gaps[1000]:.6g} nats/dim")
    assert 0 < gaps[1000] < gaps[100]
    if variance == "large":
        assert gaps[1000] < 0.15 * gaps[100]


def _filled_history(values):
    n = len(values)
    history = vlb.init_history(n)
    for _ in range(10):
        history = vlb.update_history(history, jnp.arange(n), jnp.asarray(values))
    return history


def test_loss_history_keeps_the_latest_values_and_switches_on_when_full():
    history = vlb.init_history(3, per_step=4)
    np.testing.assert_allclose(vlb.timestep_probs(history), np.full(3, 1 / 3))
    history = vlb.update_history(history, jnp.array([0, 0, 1, 0, 0, 0, 2, 1, 1, 1, 2, 2, 2]),
                                 jnp.arange(1.0, 14.0))
    np.testing.assert_array_equal(history.counts, [4, 4, 4])
    np.testing.assert_allclose(history.values, [[2, 4, 5, 6], [3, 8, 9, 10], [7, 11, 12, 13]])
    w = np.sqrt(np.mean(np.square(history.values), axis=1))
    np.testing.assert_allclose(vlb.timestep_probs(history), 0.999 * w / w.sum() + 0.001 / 3, rtol=1e-6)
    partial = vlb.update_history(vlb.init_history(3, per_step=4), jnp.array([0, 1, 2, 0]), jnp.ones(4))
    np.testing.assert_allclose(vlb.timestep_probs(partial), np.full(3, 1 / 3))


def test_sampled_bounds_are_unbiased_for_the_exact_bound():
    """Uniform and importance-sampled (history filled with each step's exact E[L_t]) one-step estimates over
    random data, t and noise average to the exact expected bound within 4 standard errors; importance sampling
    has the smaller variance."""
    chain, n_samples = ddpm_chain(100), 200_000
    with jax.enable_x64(True):
        prior, per_step = expected_terms(chain, "large")
        exact, eps_fn = prior + float(jnp.sum(per_step)), exact_eps(chain)
        proposals = {"uniform": jnp.full((100,), 0.01), "importance": vlb.timestep_probs(_filled_history(per_step))}
        spreads = {}
        for name, probs in proposals.items():
            x0 = MU + S * jax.random.normal(jax.random.PRNGKey(1), (n_samples, 1), jnp.float64)
            bound, i, term = jax.jit(lambda r, x, p: vlb.sampled_bound(r, chain, eps_fn, x, p, discrete=False))(
                jax.random.PRNGKey(2), x0, probs)
            se = float(jnp.std(bound)) / np.sqrt(n_samples)
            assert abs(float(jnp.mean(bound)) - exact) < 4 * se, (name, float(jnp.mean(bound)), exact, se)
            spreads[name] = float(jnp.std(bound))
    assert spreads["importance"] < 0.5 * spreads["uniform"], spreads


def test_hybrid_loss_trains_the_mean_with_l_simple_and_the_variance_with_the_bound():
    """Gradients: L_simple's alone for eps, lam N / 1000 / (D ln 2) times the term's for v_raw (N = 50 here)."""
    chain, key = cosine_chain(50), jax.random.PRNGKey(3)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    x0 = jax.random.randint(k1, (4, 8, 8, 3), 0, 256) / 127.5 - 1.0
    noise, eps = jax.random.normal(k2, x0.shape), jax.random.normal(k3, x0.shape)
    v_raw = jnp.tanh(jax.random.normal(k4, x0.shape))
    i = jnp.array([0, 5, 25, 49])
    xt = vlb.q_sample(chain, x0, i, noise)
    loss = lambda e, v: jnp.sum(vlb.hybrid_loss(chain, x0, xt, i, noise, e, v))
    g_eps, g_v = jax.grad(loss, argnums=(0, 1))(eps, v_raw)
    np.testing.assert_allclose(g_eps, 2 * (eps - noise) / (8 * 8 * 3), rtol=1e-5, atol=1e-9)
    scale = vlb.HYBRID_LAMBDA * 50 / 1000 / (8 * 8 * 3 * np.log(2.0))
    term_grad = jax.grad(lambda v: jnp.sum(vlb.vlb_term(chain, x0, xt, i, eps, "learned", v)))(v_raw)
    np.testing.assert_allclose(g_v, scale * term_grad, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(g_v))))
    simple = jnp.mean(jnp.square(noise - eps), axis=(1, 2, 3))
    np.testing.assert_allclose(vlb.hybrid_loss(chain, x0, xt, i, noise, eps, v_raw),
                               simple + scale * vlb.vlb_term(chain, x0, xt, i, eps, "learned", v_raw), rtol=1e-5)


def test_bound_bpd_of_discretised_gaussian_images():
    """8-bit images whose pixels are N(0.1, 0.25^2) rounded to the grid (the edge bins hold ~1e-4 of the mass): with
    that Gaussian's eps the full discrete bound (jit-compiled once, scanned over t) lies above the data's discrete
    entropy and within 0.01 bits/dim of it, up to 4 standard errors (measured +0.025 +- 0.014: the continuous model
    does not know the grid below the bin width); a learned variance at v_raw = -1 reproduces 'small'."""
    chain, mu, s = ddpm_chain(1000), 0.1, 0.25
    levels = np.arange(256) / 127.5 - 1.0
    edges = np.concatenate([[-np.inf], levels[:-1] + 1 / 255, [np.inf]])
    pmf = np.diff(stats.norm.cdf(edges, mu, s))
    entropy_bits = -np.sum(pmf * np.log2(np.maximum(pmf, 1e-300)))
    pixels = np.random.default_rng(0).choice(256, size=(1024, 4, 4, 1), p=pmf).astype(np.uint8)
    bpd = jax.jit(lambda x, r: vlb.bound_bpd(exact_eps(chain, mu, s), x, chain.betas, r))(pixels, jax.random.PRNGKey(0))
    assert bpd.shape == (1024,)
    se = float(jnp.std(bpd)) / 32
    print(f"bound {float(jnp.mean(bpd)):.4f} +- {se:.4f} bits/dim, entropy {entropy_bits:.4f}")
    assert entropy_bits - 4 * se < float(jnp.mean(bpd)) < entropy_bits + 0.01 + 4 * se
    learned = lambda x, i: (exact_eps(chain, mu, s)(x, i), -jnp.ones_like(x))
    small = vlb.bound_bpd(exact_eps(chain, mu, s), pixels[:4], chain.betas, jax.random.PRNGKey(1), "small")
    np.testing.assert_allclose(vlb.bound_bpd(learned, pixels[:4], chain.betas, jax.random.PRNGKey(1), "learned"),
                               small, rtol=1e-6)
    with pytest.raises(ValueError, match="eps_fn must return"):
        vlb.bound_bpd(learned, pixels[:4], chain.betas, jax.random.PRNGKey(1), "small")
