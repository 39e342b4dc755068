"""Bits/dim through the probability-flow ODE against closed forms (samplers/likelihood.py).

Two sources separate the ODE's answer from the data log-density: the solver (rtol = atol = 1e-5)
and the model's own approximations, p_eps for p_0 and the prior pi for the true p_T. For Gaussian
data both are closed forms, so we check the solve against the *flow's* exact answer

    log pi(z) + log p_eps(x) - log p_T(z)        (z = x(T) from the solve)

to 1e-3 bits/dim (measured: <= 1.1e-4 at these tolerances, 1e-5 at 1e-6), and the result against
the data density log p_0(x) to the issue's 0.01 bits/dim.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_lib
from samplers import likelihood
from samplers.analytic import GaussianMixture, benchmark_mixture

LN2 = np.log(2.0)


def _gaussian(mu, std):
    mu = np.asarray(mu, np.float64)
    return GaussianMixture(np.ones(1), mu[None], (std**2 * np.eye(len(mu)))[None])


def _bpd(log_p, dim):
    return -np.asarray(log_p) / (dim * LN2) + 8.0


# VE: the prior N(0, sigma_max^2) misses p_T = N(mu, s^2 + sigma_max^2) by a term ~ z . mu / sigma_max^2
# with |z| ~ sigma_max = 50: ~0.01 bits/dim per example for |mu| ~ 0.5 in D = 4 (measured max 0.0116).
# That is the VE model's prior error, not the solver's; with mu = 0 it vanishes and the 0.01 bound holds.
@pytest.mark.parametrize("name, sde, mu", [
    ("vp", sde_lib.VPSDE(), [0.3, -0.2, 0.1, 0.5]),
    pytest.param("subvp", sde_lib.subVPSDE(), [0.3, -0.2, 0.1, 0.5], marks=pytest.mark.slow),
    ("ve", sde_lib.VESDE(), [0.0, 0.0, 0.0, 0.0]),
])
def test_gaussian_bits_per_dim_with_exact_divergence(name, sde, mu):
    dim, batch, eps = 4, 32, 1e-5
    data = _gaussian(mu, 0.4)
    x = data.sample(jax.random.PRNGKey(0), batch)[0]
    fn = likelihood.get_likelihood_fn(sde, hutchinson_type="exact", eps=eps)
    bpd, z, nfe = jax.jit(lambda x: fn(None, data.score_fn(sde), x))(x)
    ones = jnp.ones(batch)
    (a0, s0), (a_t, s_t) = sde.marginal_coeffs(eps * ones), sde.marginal_coeffs(sde.T * ones)
    flow = data.log_prob(x, a0, s0) + sde.prior_logp(z) - data.log_prob(z, a_t, s_t)
    np.testing.assert_allclose(bpd, _bpd(flow, dim), atol=1e-3)
    np.testing.assert_allclose(bpd, _bpd(data.log_prob(x, ones, 0 * ones), dim), atol=0.01)
    assert 10 < int(nfe) < 1000



def test_continuous_data_bits_per_dim_are_the_densitys():
    """quantized=False (a latent model's latents): -log2 p(x) / D of the Gaussian's own density, no 8-bit offset."""
    dim, batch = 4, 16
    data = _gaussian([0.3, -0.2, 0.1, 0.5], 0.4)
    x = data.sample(jax.random.PRNGKey(3), batch)[0]
    fn = likelihood.get_likelihood_fn(sde_lib.VPSDE(), hutchinson_type="exact", quantized=False)
    bpd, _, _ = jax.jit(lambda x: fn(None, data.score_fn(sde_lib.VPSDE()), x))(x)
    ones = jnp.ones(batch)
    np.testing.assert_allclose(bpd, _bpd(data.log_prob(x, ones, 0 * ones), dim) - 8.0, atol=0.01)


MIXTURE_POINTS = jnp.array([[-1.0, -0.5], [1.1, -0.2], [0.0, 0.9], [0.2, 0.3]])
MIXTURE_TOL = 1e-6  # the low-density point between modes has a harder path: 1.7e-3 bpd of solver error at 1e-5


@functools.cache
def _mixture_exact_bpd():
    sde, gm = sde_lib.VPSDE(), benchmark_mixture()
    fn = likelihood.get_likelihood_fn(sde, hutchinson_type="exact", rtol=MIXTURE_TOL, atol=MIXTURE_TOL)
    return jax.jit(lambda x: fn(None, gm.score_fn(sde), x))(MIXTURE_POINTS)


def test_exact_trace_matches_the_flow_on_a_mixture():
    """The 2-D mixture's flow has a non-diagonal Jacobian; its exact trace must give the flow's closed
    form to 1e-3 bpd (measured 5e-5 at rtol = atol = 1e-6)."""
    sde, gm = sde_lib.VPSDE(), benchmark_mixture()
    bpd, z, _ = _mixture_exact_bpd()
    ones = jnp.ones(len(MIXTURE_POINTS))
    (a0, s0), (a_t, s_t) = sde.marginal_coeffs(1e-5 * ones), sde.marginal_coeffs(ones)
    flow = gm.log_prob(MIXTURE_POINTS, a0, s0) + sde.prior_logp(z) - gm.log_prob(z, a_t, s_t)
    np.testing.assert_allclose(bpd, _bpd(flow, 2), atol=1e-3)


@pytest.mark.parametrize("kind", ["rademacher", pytest.param("gaussian", marks=pytest.mark.slow)])
def test_hutchinson_estimates_are_unbiased_on_a_mixture(kind):
    """With a non-diagonal Jacobian the estimators are really random (an isotropic Gaussian would make
    Rademacher exact). Each point is replicated m = 256 times in one batch; the mean over replicas
    must be within 5 standard errors (sample std / sqrt(m)) of the exact-trace value."""
    sde, gm, m = sde_lib.VPSDE(), benchmark_mixture(), 256
    fn = likelihood.get_likelihood_fn(sde, hutchinson_type=kind, rtol=MIXTURE_TOL, atol=MIXTURE_TOL)
    x = jnp.repeat(MIXTURE_POINTS, m, axis=0)
    bpd, _, _ = jax.jit(lambda rng, x: fn(rng, gm.score_fn(sde), x))(jax.random.PRNGKey(1), x)
    est = np.asarray(bpd).reshape(len(MIXTURE_POINTS), m)
    std = est.std(axis=1, ddof=1)
    assert np.all(std > 1e-3), f"{kind}: the estimator should be random here"
    np.testing.assert_array_less(np.abs(est.mean(axis=1) - np.asarray(_mixture_exact_bpd()[0])),
                                 5 * std / np.sqrt(m))


@pytest.mark.parametrize("centered", [pytest.param(False, marks=pytest.mark.slow), True])
def test_bits_per_dim_of_8bit_data_follow_the_scaler(centered):
    """Data given in pixel units: y = pixel + U ~ N(m, s^2 I) on [0, 256)^D. A bin of a discrete
    pixel has width 1 in y, so the literature's bits/dim is exactly -log2 N(y; m, s^2) / D. The
    model sees x = a y / 256 + b (a = 2, b = -1 centred; a = 1, b = 0 not), a Gaussian with mean
    a m / 256 + b and std a s / 256; the likelihood must undo both the 1/256 and the a."""
    sde, dim, batch = sde_lib.VPSDE(), 3, 32
    m, s = np.array([100.0, 128.0, 160.0]), 30.0
    pixels = _gaussian(m, s)
    y = pixels.sample(jax.random.PRNGKey(2), batch)[0]
    a, b = (2.0, -1.0) if centered else (1.0, 0.0)
    model_data = _gaussian(a * m / 256 + b, a * s / 256)
    inverse_scaler = (lambda x: (x + 1.0) / 2.0) if centered else None
    fn = likelihood.get_likelihood_fn(sde, hutchinson_type="rademacher", inverse_scaler=inverse_scaler)
    bpd, _, _ = jax.jit(lambda rng, x: fn(rng, model_data.score_fn(sde), x))(jax.random.PRNGKey(3), a * y / 256 + b)
    ones = jnp.ones(batch)
    expected = -np.asarray(pixels.log_prob(y, ones, 0 * ones)) / (dim * LN2)
    np.testing.assert_allclose(bpd, expected, atol=0.01)


def test_bad_options_are_errors():
    sde = sde_lib.VPSDE()
    with pytest.raises(ValueError, match="hutchinson_type"):
        likelihood.get_likelihood_fn(sde, hutchinson_type="none")
    with pytest.raises(ValueError, match="affine"):
        likelihood.get_likelihood_fn(sde, inverse_scaler=lambda x: x**2)
    with pytest.raises(ValueError, match="ODE method"):
        likelihood.get_likelihood_fn(sde, method="rk4")


def test_eval_mode_reads_the_likelihood_fields():
    from configs.defaults import get_base_config
    from modes.evaluate import make_bpd_fn

    config = get_base_config()
    make_bpd_fn(config, sde_lib.VPSDE(), model=None)
    config.eval.hutchinson_type = "hutch"
    with pytest.raises(ValueError, match="hutchinson_type"):
        make_bpd_fn(config, sde_lib.VPSDE(), model=None)
