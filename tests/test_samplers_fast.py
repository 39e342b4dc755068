"""DDIM, DPM-Solver++(2M) and the EDM Heun sampler on the analytic mixture target.

Reproduction: n = 8192 samples, every mixture weight, mean and covariance entry within (5 + bias)
standard errors (tests/mixture_check.py), `bias` being the configuration's discretization bias
measured on 65k samples (max over the 18 statistics, in standard errors at n = 8192), rounded up
with ~0.5 for that measurement's noise:

    ddim eta=0, 500 steps    VP 0.9  VE 1.1  sub-VP 1.0
    ddim eta=1, 1000 steps   VP 1.2  VE 1.0
    dpm_solver, 100 steps    VP 0.4  VE 0.5  sub-VP 0.6
    heun, 80 steps           VP 0.4  VE 0.5  sub-VP 0.5
    heun, churn 10, 80 steps VP 1.1  VE 0.6

Values near 0.5 are that measurement's own noise floor (0.35 per statistic at 65k samples, max
over 18): at these step counts the bias is below what 65k samples resolve.

Order: the deterministic solvers are compared path by path with a tight adaptive solve of the
same probability-flow ODE from the same prior draw; doubling the steps must shrink the median
error by about 2 (DDIM, first order) or 4 (DPM-Solver++(2M), Heun; second order).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mixture_check import assert_reproduces

import sde_lib
import samplers
from samplers import ode
from samplers.analytic import benchmark_mixture
from samplers.common import denoiser, draw_prior

N_SAMPLES = 8192
SDES = {"vp": sde_lib.VPSDE(), "subvp": sde_lib.subVPSDE(), "ve": sde_lib.VESDE()}
GM = benchmark_mixture()
slow = pytest.mark.slow


def _run(name, sde_name, n=N_SAMPLES, seed=0, **options):
    sde = SDES[sde_name]
    sampler = samplers.get_sampler(name, sde, (n, 2), **options)
    return jax.jit(lambda rng: sampler(rng, GM.score_fn(sde)))(jax.random.PRNGKey(seed))


# (sampler, sde, options, bias allowance in standard errors, expected nfe)
CASES = [
    ("ddim", "vp", {"num_steps": 500}, 1.5, 501),
    pytest.param("ddim", "ve", {"num_steps": 500}, 1.5, 501, marks=slow),
    pytest.param("ddim", "subvp", {"num_steps": 500}, 1.5, 501, marks=slow),
    pytest.param("ddim", "vp", {"num_steps": 1000, "eta": 1.0}, 2.0, 1001, marks=slow),
    ("ddim", "ve", {"num_steps": 1000, "eta": 1.0}, 2.0, 1001),
    ("dpm_solver", "vp", {"num_steps": 100}, 1.0, 101),
    ("dpm_solver", "ve", {"num_steps": 100}, 1.0, 101),
    pytest.param("dpm_solver", "subvp", {"num_steps": 100}, 1.0, 101, marks=slow),
    ("heun", "vp", {"num_steps": 80}, 1.0, 161),
    pytest.param("heun", "ve", {"num_steps": 80}, 1.0, 161, marks=slow),
    ("heun", "subvp", {"num_steps": 80}, 1.0, 161),
    pytest.param("heun", "vp", {"num_steps": 80, "s_churn": 10.0}, 1.5, 161, marks=slow),
    ("heun", "ve", {"num_steps": 80, "s_churn": 10.0}, 1.5, 161),
]


@pytest.mark.parametrize("name, sde_name, options, bias_se, nfe", CASES)
def test_fast_sampler_reproduces_mixture(name, sde_name, options, bias_se, nfe):
    x, used = _run(name, sde_name, **options)
    assert int(used) == nfe
    assert_reproduces(GM, x, bias_se, f"{name} {sde_name} {options}")


@functools.cache
def _exact_flow_samples(n=1024, seed=3):
    """x_0 from the probability-flow ODE solved to rtol = atol = 1e-7 from the x_T that seed draws (VP)."""
    sde = SDES["vp"]
    score_fn = GM.score_fn(sde)
    x, _ = jax.jit(lambda z: ode.decode(sde, score_fn, z, rtol=1e-7, atol=1e-7))(
        draw_prior(sde, jax.random.PRNGKey(seed), (n, 2))[0])
    return denoiser(sde, score_fn, x, jnp.full((n,), sde.sampling_eps))


def _median_path_error(name, num_steps):
    """Median over samples of |x - x_exact| from the same x_T. The median, not the mean: a few paths
    start on a boundary between modes, where any O(h^p) error can send them to the other mode."""
    exact = _exact_flow_samples()
    x, _ = _run(name, "vp", n=len(exact), seed=3, num_steps=num_steps)
    return float(jnp.median(jnp.linalg.norm(x - exact, axis=-1)))


# measured ratios (160 -> 320 steps; Heun 80 -> 160): DDIM 1.98, DPM-Solver++(2M) 4.03, Heun 4.11
@pytest.mark.parametrize("name, steps, low, high", [("ddim", 160, 1.6, 2.4), ("dpm_solver", 160, 3.2, 5.0),
                                                    ("heun", 80, 3.2, 5.0)])
def test_deterministic_solvers_converge_at_their_order(name, steps, low, high):
    ratio = _median_path_error(name, steps) / _median_path_error(name, 2 * steps)
    assert low < ratio < high, f"{name}: error ratio {ratio:.2f} for doubled steps, expected in ({low}, {high})"


def test_discrete_ddim_on_the_chain_reproduces_mixture():
    """DDIM on the VP chain itself (Stable Diffusion's DDIM: steps (n-1-k) N/n + 1, the chain's alpha_bar), with
    the chain's exact score, as a discrete-time model is used."""
    sde = SDES["vp"]
    sampler = samplers.get_sampler("ddim", sde, (N_SAMPLES, 2), num_steps=500, discrete=True, steps_offset=1)
    x, used = jax.jit(lambda rng: sampler(rng, GM.score_fn(sde, continuous=False)))(jax.random.PRNGKey(0))
    assert int(used) == 500
    assert_reproduces(GM, x, 1.5, "discrete ddim vp")


def test_ddim_eta_injects_noise():
    """Both eta = 0 and eta = 1 reproduce the target, so check that eta is used: same x_T, other paths."""
    a, _ = _run("ddim", "vp", n=256, num_steps=5)
    b, _ = _run("ddim", "vp", n=256, num_steps=5, eta=1.0)
    assert float(jnp.max(jnp.abs(a - b))) > 1e-2


@pytest.mark.parametrize("name, options, message", [
    ("ddim", {"eta": -0.5}, "eta >= 0"),
    ("heun", {"rho": 0.0}, "rho > 0"),
    ("heun", {"s_tmin": 2.0, "s_tmax": 1.0}, "s_tmin <= s_tmax"),
    ("dpm_solver", {"num_steps": 0.5}, "positive"),
    ("dpm_solver", {"eta": 1.0}, "takes no option"),
])
def test_bad_options_are_errors(name, options, message):
    with pytest.raises(ValueError, match=message):
        samplers.get_sampler(name, SDES["vp"], (4, 2), **options)


@pytest.mark.parametrize("method, field, bad_value, message", [
    ("ode", "ode_method", "rk4", "ODE method"),
    ("ddim", "eta", -1.0, "eta"),
    ("dpm_solver", "num_steps", -3, "positive"),
    ("heun", "rho", 0.0, "rho"),
    ("heun", "s_churn", -1.0, "s_churn"),
    ("pc", "predictor", "heun", "predictor"),
    ("euler", "eta", 0.0, "config.sampling.method"),
])
def test_from_config_passes_the_method_options(method, field, bad_value, message):
    """Each method builds from the defaults, and a bad value of one of its fields reaches its builder."""
    from configs.defaults import get_base_config

    config = get_base_config()
    config.sampling.method = method
    if method != "euler":
        samplers.from_config(config, SDES["vp"], (8, 2))
    config.sampling[field] = bad_value
    with pytest.raises(ValueError, match=message):
        samplers.from_config(config, SDES["vp"], (8, 2))
