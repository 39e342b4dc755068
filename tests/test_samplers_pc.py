"""Predictor-corrector sampling reproduces an analytic Gaussian-mixture target (samplers/pc.py).

Each case draws n = 8192 samples with the SDE's N = 1000 steps and the exact mixture score
(samplers/analytic.py), then checks every mixture weight, component mean and covariance entry
against the closed form within (5 + bias) standard errors of n exact samples (tests/mixture_check.py).
`bias` is the case's discretization bias in those units, measured once on 65k-100k samples and
rounded up with ~0.5 for that measurement's own noise. What a finite step does, measured (max over
the 18 statistics, in standard errors at n = 8192):

    VP  reverse_diffusion + langevin 1.9   ancestral 1.2   euler_maruyama 0.4
        euler_maruyama + langevin 1.7      reverse_diffusion probability flow 2.1
    VE  reverse_diffusion + langevin 1.6   ancestral 0.8   euler_maruyama 0.6
        euler_maruyama + langevin 1.8

(Langevin at snr = 0.16 and the first-order flow steps are the biased ones, as expected.) The
slow matrix runs every predictor x corrector pair on VP, sub-VP and VE with a bias allowance of 3.
Corrector-only sampling (predictor 'none') is not in it: with one Langevin step per noise level it
does not mix to the target (e.g. ALD alone at snr 0.16: covariance off by ~17 standard errors).
"""
import itertools

import jax
import pytest
from mixture_check import assert_reproduces

import sde_lib
import samplers
from samplers.analytic import benchmark_mixture

N_SAMPLES = 8192
SDES = {"vp": sde_lib.VPSDE(), "subvp": sde_lib.subVPSDE(), "ve": sde_lib.VESDE()}
GM = benchmark_mixture()


def _run(sde_name, seed=0, continuous=True, **options):
    sde = SDES[sde_name]
    sampler = samplers.get_sampler("pc", sde, (N_SAMPLES, 2), **options)
    return jax.jit(lambda rng: sampler(rng, GM.score_fn(sde, continuous)))(jax.random.PRNGKey(seed))


# (sde, predictor, corrector, extra options, bias allowance in standard errors)
slow = pytest.mark.slow
CASES = [
    ("vp", "reverse_diffusion", "langevin", {}, 2.5),
    pytest.param("ve", "reverse_diffusion", "langevin", {}, 2.0, marks=slow),
    pytest.param("vp", "ancestral_sampling", "none", {}, 2.0, marks=slow),  # default: the discrete-time test
    ("ve", "ancestral_sampling", "none", {}, 1.5),
    ("subvp", "euler_maruyama", "langevin", {}, 2.5),
    ("ve", "reverse_diffusion", "ald", {}, 2.5),
    ("vp", "reverse_diffusion", "none", {"probability_flow": True}, 2.5),
]


@pytest.mark.parametrize("sde_name, predictor, corrector, options, bias_se", CASES)
def test_pc_reproduces_mixture(sde_name, predictor, corrector, options, bias_se):
    x, nfe = _run(sde_name, predictor=predictor, corrector=corrector, **options)
    per_step = (predictor != "none") + (corrector != "none")
    assert int(nfe) == 1000 * per_step
    assert_reproduces(GM, x, bias_se, f"{sde_name} {predictor}+{corrector} {options}")


def test_discrete_time_score_with_the_ddpm_chain():
    """A discrete-time model's score (alpha_i, sigma_i of the DDPM chain, at i = floor(t (N-1))) with
    ancestral sampling: the setting of configs/vp/ddpm_*; its bias is that of the continuous case."""
    x, _ = _run("vp", continuous=False, predictor="ancestral_sampling", corrector="none")
    assert_reproduces(GM, x, 2.0, "vp ancestral, discrete-time score")


# ancestral sampling exists for VP and VE only, and has no probability-flow form
_MATRIX = [(s, p, c, flow) for s, p, c, flow in itertools.product(
    SDES, ["euler_maruyama", "reverse_diffusion", "ancestral_sampling"], ["none", "langevin", "ald"], [False, True])
    if not (p == "ancestral_sampling" and (s == "subvp" or flow))]


@pytest.mark.slow
@pytest.mark.parametrize("sde_name, predictor, corrector, probability_flow", _MATRIX)
def test_pc_matrix_reproduces_mixture(sde_name, predictor, corrector, probability_flow):
    x, _ = _run(sde_name, seed=1, predictor=predictor, corrector=corrector, probability_flow=probability_flow)
    assert_reproduces(GM, x, 3.0, f"{sde_name} {predictor}+{corrector} flow={probability_flow}")


def test_denoise_returns_the_last_mean():
    """denoise=False keeps the last step's noise: for VE reverse diffusion that is sigma_min^2 = 1e-4
    of extra variance per coordinate over the noise-free x_mean, which denoise=True returns."""
    sde = sde_lib.VESDE(N=50)
    results = []
    for denoise in (True, False):
        sampler = samplers.get_sampler("pc", sde, (4096, 2), corrector="none", denoise=denoise)
        results.append(jax.jit(lambda rng: sampler(rng, GM.score_fn(sde)))(jax.random.PRNGKey(0))[0])
    difference = results[1] - results[0]
    assert abs(float(difference.var()) - sde.sigma_min**2) < 0.1 * sde.sigma_min**2


@pytest.mark.parametrize("sde_name, options, message", [
    ("vp", {"predictor": "heun"}, "Unknown predictor"),
    ("vp", {"corrector": "hmc"}, "Unknown corrector"),
    ("vp", {"predictor": "reverse_diffusion", "num_steps": 10}, "num_steps"),
    ("vp", {"predictor": "ancestral_sampling", "probability_flow": True}, "probability-flow"),
    ("subvp", {"predictor": "ancestral_sampling", "num_steps": 1000}, "needs a VP or VE"),
    ("vp", {"num_steps": -1}, "positive"),
    ("vp", {"eps": 2.0}, "eps"),
    ("vp", {"rtol": 1e-3}, "takes no option"),
])
def test_bad_options_are_errors(sde_name, options, message):
    with pytest.raises(ValueError, match=message):
        samplers.get_sampler("pc", SDES[sde_name], (4, 2), **options)
