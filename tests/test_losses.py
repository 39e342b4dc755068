"""The denoising score-matching losses on Gaussian data, whose optimal score is closed-form.

Data x_0 ~ N(mu, s^2 I). Then x_t ~ N(alpha mu, v I) with v = alpha^2 s^2 + sigma^2, the exact score is
s*(x, t) = -(x - alpha mu) / v, and per dimension E[(sigma s* + z)^2] = alpha^2 s^2 / v.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_lib
from losses import EDMLevels, score_matching_loss

MU, S, DIM = 0.3, 0.5, 4


def exact_score(sde, continuous):
    def score_fn(x, t):
        if continuous:
            alpha, sigma = sde.marginal_coeffs(t)
        else:
            alpha, sigma = sde.discrete_marginal_coeffs(sde.timestep(t))
        v = alpha**2 * S**2 + sigma**2
        return -(x - alpha[:, None] * MU) / v[:, None]
    return score_fn


def expected_minimum(sde, continuous, eps=1e-5):
    """E_noise-level[alpha^2 s^2 / v] per dimension (continuous: trapezoid on 20001 points)."""
    if continuous:
        t = jnp.linspace(eps, sde.T, 20001)
        alpha, sigma = sde.marginal_coeffs(t)
    else:
        alpha, sigma = sde.discrete_marginal_coeffs(jnp.arange(sde.N))
    m = np.asarray(alpha, np.float64) ** 2 * S**2 / (np.asarray(alpha, np.float64) ** 2 * S**2
                                                       + np.asarray(sigma, np.float64) ** 2)
    return float(np.trapezoid(m, dx=1.0) / (len(m) - 1)) if continuous else float(m.mean())


def data(rng, n):
    return MU + S * jax.random.normal(rng, (n, DIM))


CASES = [
    ("vp", sde_lib.VPSDE(), True),
    ("subvp", sde_lib.subVPSDE(), True),
    ("ve", sde_lib.VESDE(sigma_max=20.0), True),
    ("ddpm", sde_lib.VPSDE(), False),
    ("smld", sde_lib.VESDE(sigma_max=20.0), False),
]


@pytest.mark.parametrize("name,sde,continuous", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("reduce_mean", [True, False])
def test_exact_score_attains_the_closed_form_minimum(name, sde, continuous, reduce_mean):
    loss = jax.jit(functools.partial(score_matching_loss, score_fn=exact_score(sde, continuous), sde=sde,
                                     continuous=continuous, reduce_mean=reduce_mean))
    repeats = np.array([float(loss(jax.random.PRNGKey(k), x0=data(jax.random.PRNGKey(100 + k), 10000)))
                        for k in range(8)])
    expected = expected_minimum(sde, continuous) * (1.0 if reduce_mean else 0.5 * DIM)
    standard_error = repeats.std(ddof=1) / np.sqrt(len(repeats))
    assert abs(repeats.mean() - expected) < 5 * standard_error + 1e-3 * expected, (repeats.mean(), expected)


@pytest.mark.parametrize("name,sde,continuous", CASES + [("vp-likelihood", sde_lib.VPSDE(), True)],
                         ids=[c[0] for c in CASES] + ["vp-likelihood"])
def test_exact_score_minimises_the_loss(name, sde, continuous):
    """L(theta) for s = s* + theta h, with common random numbers: L(0) < L(+-theta). The linear term
    2 theta E[w (sigma s* + z) sigma h] has mean 0 at the optimum; the quadratic term is positive."""
    likelihood_weighting = name == "vp-likelihood"
    h = lambda x, t: jnp.sin(3.0 * x) + 0.5  # any direction
    x0 = data(jax.random.PRNGKey(1), 20000)

    @jax.jit
    def loss(theta):
        s_star = exact_score(sde, continuous)
        return score_matching_loss(jax.random.PRNGKey(0), lambda x, t: s_star(x, t) + theta * h(x, t), x0, sde,
                                   continuous=continuous, likelihood_weighting=likelihood_weighting,
                                   eps=1e-3 if likelihood_weighting else 1e-5)

    at_optimum = float(loss(0.0))
    for theta in (-0.3, 0.3):
        assert float(loss(theta)) > at_optimum


def test_likelihood_weighting_is_g2_over_sigma2():
    """With likelihood weighting the per-example weight is g(t)^2 / sigma(t)^2: compare a batch of one
    time against the unweighted loss times that factor (same rng, so the same t and z)."""
    sde = sde_lib.VPSDE()
    x0 = data(jax.random.PRNGKey(2), 1)
    score_fn = lambda x, t: -x
    rng = jax.random.PRNGKey(3)
    plain = score_matching_loss(rng, score_fn, x0, sde)
    weighted = score_matching_loss(rng, score_fn, x0, sde, likelihood_weighting=True)
    t = jax.random.uniform(jax.random.split(rng)[0], (1,), minval=1e-5, maxval=1.0)
    g2 = sde.sde(x0, t)[1] ** 2
    sigma2 = sde.marginal_coeffs(t)[1] ** 2
    np.testing.assert_allclose(float(weighted), float(plain * g2[0] / sigma2[0]), rtol=1e-5)


def test_discrete_losses_reject_likelihood_weighting():
    with pytest.raises(ValueError, match="continuous"):
        score_matching_loss(jax.random.PRNGKey(0), lambda x, t: x, jnp.zeros((2, 3)), sde_lib.VPSDE(),
                            continuous=False, likelihood_weighting=True)


@pytest.mark.parametrize("sde", [sde_lib.VPSDE(), sde_lib.VESDE(sigma_max=50.0)], ids=["vp", "ve"])
def test_edm_weights_make_the_optimal_loss_one_at_every_level(sde):
    """x_0 ~ N(0, sigma_d^2 I) with its exact score: ||D - x_0||^2 has mean sigma_d^2 sigma_e^2 / (sigma_e^2 +
    sigma_d^2) a pixel, and EDM's lambda(sigma_e) = (sigma_e^2 + sigma_d^2) / (sigma_e sigma_d)^2 scales it to 1 at
    every noise level: the reduce_mean loss is 1."""
    edm = EDMLevels(sigma_data=0.5)
    x0 = 0.5 * jax.random.normal(jax.random.PRNGKey(0), (8192, 8))

    def exact_score(x, t):
        alpha, sigma = sde.marginal_coeffs(t)
        return -x / (alpha[:, None] ** 2 * 0.25 + sigma[:, None] ** 2)

    loss = score_matching_loss(jax.random.PRNGKey(1), exact_score, x0, sde, reduce_mean=True, edm=edm)
    assert float(loss) == pytest.approx(1.0, abs=0.02)


def test_edm_levels_are_log_normal():
    """With s = 0 the residual is z, so the loss is E[w] = 1 + E[sigma_e^2] / sigma_d^2, and for
    log sigma_e ~ N(m, v^2), E[sigma_e^2] = exp(2 m + 2 v^2): the levels are drawn and mapped to t rightly."""
    edm = EDMLevels(p_mean=0.1, p_std=0.3, sigma_data=1.0)
    x0 = jnp.zeros((16384, 4))
    loss = score_matching_loss(jax.random.PRNGKey(2), lambda x, t: jnp.zeros_like(x), x0, sde_lib.VPSDE(),
                               reduce_mean=True, edm=edm)
    assert float(loss) == pytest.approx(1.0 + np.exp(0.2 + 2 * 0.09), rel=0.02)


def test_edm_loss_needs_continuous_time_without_likelihood_weighting():
    x0 = jnp.zeros((2, 2))
    with pytest.raises(ValueError, match="needs continuous training"):
        score_matching_loss(jax.random.PRNGKey(0), lambda x, t: x, x0, sde_lib.VPSDE(), continuous=False,
                            edm=EDMLevels())
    with pytest.raises(ValueError, match="weights the noise levels itself"):
        score_matching_loss(jax.random.PRNGKey(0), lambda x, t: x, x0, sde_lib.VPSDE(), likelihood_weighting=True,
                            edm=EDMLevels())
