"""The probability-flow ODE sampler, encode / decode and the evaluation count (samplers/ode.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback
from mixture_check import assert_reproduces

import sde_lib
import samplers
from samplers import ode
from samplers.analytic import benchmark_mixture

SDES = {"vp": sde_lib.VPSDE(), "subvp": sde_lib.subVPSDE(), "ve": sde_lib.VESDE()}
GM = benchmark_mixture()
slow = pytest.mark.slow


# Discretization bias at the default rtol = atol = 1e-5, measured on 65k samples: 0.4 (VP), 0.6 (VE),
# 0.4 (sub-VP) standard errors at n = 8192, i.e. at the noise of that measurement; allowance 1.
@pytest.mark.parametrize("sde_name", ["vp", "ve", pytest.param("subvp", marks=slow)])
def test_ode_sampler_reproduces_mixture(sde_name):
    sde = SDES[sde_name]
    sampler = samplers.get_sampler("ode", sde, (8192, 2))
    x, nfe = jax.jit(lambda rng: sampler(rng, GM.score_fn(sde)))(jax.random.PRNGKey(0))
    assert 30 < int(nfe) < 500
    assert_reproduces(GM, x, 1.0, f"ode {sde_name}")


@pytest.mark.parametrize("sde_name", ["vp", pytest.param("ve", marks=slow), pytest.param("subvp", marks=slow)])
def test_encode_then_decode_returns_the_data(sde_name):
    """decode(encode(x)) == x to solver tolerance, and encode maps data onto the prior.

    At rtol = atol = 1e-6 the round-trip error measured over 8192 points is ~1e-6 at the median and
    <= 4e-5 at the 99th percentile; the few paths that start between modes amplify local errors
    (max ~3e-3; at 1e-5 everything is ~10x larger). The latent z = x(T) must follow p_T = N(0, s^2 I)
    (s = prior scale; p_T differs from it by ~1e-4 here): mean within 5 standard errors, variance
    and correlation of z / s likewise.
    """
    sde, n, tol = SDES[sde_name], 8192, 1e-6
    x = GM.sample(jax.random.PRNGKey(0), n)[0]
    score_fn = GM.score_fn(sde)

    @jax.jit
    def round_trip(x):
        z, _ = ode.encode(sde, score_fn, x, rtol=tol, atol=tol)
        return z, ode.decode(sde, score_fn, z, rtol=tol, atol=tol)[0]

    z, back = round_trip(x)
    error = np.asarray(jnp.linalg.norm(back - x, axis=-1))
    assert np.median(error) < 1e-5 and np.percentile(error, 99) < 1e-4 and error.max() < 1e-2, \
        f"round trip error median {np.median(error):.1e}, p99 {np.percentile(error, 99):.1e}, max {error.max():.1e}"
    u = np.asarray(z) / sde.prior_scale
    np.testing.assert_array_less(np.abs(u.mean(0)), 5 / np.sqrt(n))
    np.testing.assert_array_less(np.abs(np.cov(u.T) - np.eye(2)), 5 * np.sqrt(2 / n))


@pytest.mark.parametrize("method", ["dopri5", pytest.param("bosh3", marks=slow), pytest.param("tsit5", marks=slow)])
def test_nfe_counts_every_score_evaluation(method):
    """The reported nfe equals a host-side counter bumped by every score evaluation the solve runs."""
    sde, calls = SDES["vp"], [0]

    def bump(_):
        calls[0] += 1
        return np.int32(0)

    def counting_score_fn(x, t):
        io_callback(bump, jax.ShapeDtypeStruct((), jnp.int32), t[0], ordered=True)
        return GM.score_fn(sde)(x, t)

    sampler = samplers.get_sampler("ode", sde, (16, 2), method=method, rtol=1e-4, atol=1e-4)
    _, nfe = jax.jit(lambda rng: sampler(rng, counting_score_fn))(jax.random.PRNGKey(0))
    assert int(nfe) == calls[0] > 10


def test_bad_method_is_an_error():
    with pytest.raises(ValueError, match="Unknown ODE method"):
        samplers.get_sampler("ode", SDES["vp"], (4, 2), method="euler")
