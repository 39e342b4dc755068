"""img2img (SDEdit) as a restart of the reverse process, sde_lib.Restarted: for Gaussian data N(mu, s^2 I) and
its exact score the probability-flow ODE maps x_t to

    x_0 = mu + s (x_t - alpha mu) / sqrt(alpha^2 s^2 + sigma^2),

so a restart from x_t = alpha x_in + sigma z at t = strength T has a closed form: its distance to the input
grows with the strength, and at strength 1 the outputs are distributed as unconditional samples."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import sde_lib
from samplers.common import draw_prior

MU, S = 0.5, 0.2


def gaussian_score(sde):
    def score_fn(x, t):
        alpha, sigma = sde.marginal_coeffs(t)
        alpha, sigma = alpha[:, None], sigma[:, None]
        return -(x - alpha * MU) / (alpha**2 * S**2 + sigma**2)

    return score_fn


def restart(strength, x_in, rng, method="ode", **options):
    sde = sde_lib.VPSDE(N=1000)
    restarted = sde_lib.Restarted(sde, strength, x_in)
    sampler = samplers.get_sampler(method, restarted, x_in.shape, **options)
    out, _ = jax.jit(lambda key: sampler(key, gaussian_score(sde)))(rng)
    return restarted, np.asarray(out)


def test_ode_restart_is_the_closed_form_map_and_moves_away_with_strength():
    x_in = jnp.asarray(np.random.default_rng(0).normal(MU, S, (256, 4)), jnp.float32)
    rng = jax.random.PRNGKey(1)
    distances = []
    for strength in (0.2, 0.4, 0.6, 0.8, 1.0):
        restarted, out = restart(strength, x_in, rng, rtol=1e-6, atol=1e-6)
        x_t = np.asarray(draw_prior(restarted, rng, x_in.shape)[0])  # the sampler's own start
        alpha, sigma = (float(c) for c in restarted.marginal_coeffs(jnp.float32(restarted.T)))
        expected = MU + S * (x_t - alpha * MU) / np.sqrt(alpha**2 * S**2 + sigma**2)
        np.testing.assert_allclose(out, expected, atol=2e-3)
        distances.append(float(np.mean(np.linalg.norm(out - np.asarray(x_in), axis=-1))))
    assert all(a < b for a, b in zip(distances, distances[1:])), distances
    # at strength 1 the input is forgotten: outputs ~ N(mu, s^2), at the distance of two independent draws,
    # E ||X - Y|| = sqrt(2) s E[chi_4] = sqrt(2) s 1.880
    assert abs(out.mean() - MU) < 0.02 and abs(out.std() - S) < 0.02
    assert distances[-1] == pytest.approx(np.sqrt(2) * S * 1.880, rel=0.1)


@pytest.mark.parametrize("method, options, stochastic", [("ddim", {}, False), ("dpm_solver", {"num_steps": 20}, False),
                                                     ("pc", {}, True)])
def test_every_sampler_restarts_below_strength_t(method, options, stochastic):
    x_in = jnp.full((512, 2), MU + 3 * S, jnp.float32)  # a point far out in the data's tail
    restarted, out = restart(0.3, x_in, jax.random.PRNGKey(2), method, **options)
    assert restarted.N == round(0.3 * 999) + 1 and restarted.T == pytest.approx(0.3, abs=1e-3)
    # the mean output for this input, v = alpha^2 s^2 + sigma^2: deterministic samplers map x_t as the ODE does,
    # mu + s alpha (x_in - mu) / sqrt(v); stochastic ones draw the posterior p(x_0 | x_t), whose mean averages
    # to mu + s^2 alpha^2 (x_in - mu) / v
    alpha, sigma = (float(c) for c in restarted.marginal_coeffs(jnp.float32(restarted.T)))
    v = alpha**2 * S**2 + sigma**2
    mean = MU + (S**2 * alpha**2 / v if stochastic else S * alpha / np.sqrt(v)) * 3 * S
    assert out.mean() == pytest.approx(mean, abs=0.02)


@pytest.mark.parametrize("strength, message", [(0.0, r"must lie in \(0, 1\]"), (1.5, r"must lie in \(0, 1\]"),
                                               (1e-4, "at or below the smallest sampling time")])
def test_bad_strengths_are_one_line(strength, message):
    with pytest.raises(ValueError, match=message) as err:
        sde_lib.Restarted(sde_lib.VPSDE(N=1000), strength, jnp.zeros((1, 2)))
    assert "\n" not in str(err.value)
