"""The continuous-time (VDM) bound (losses/vdm.py) against its closed form on Gaussian data.

For x ~ N(MU, S^2) per dimension and the exact eps_hat(z_t) = E[eps | z_t] = sigma_t (z_t - alpha_t MU) / v_t,
v_t = alpha_t^2 S^2 + sigma_t^2, per dimension E||eps - eps_hat||^2 = alpha_t^2 S^2 / v_t = S^2 / (S^2 + e^gamma), so

    L_inf = 1/2 int gamma' S^2 / (S^2 + e^gamma) dt = 1/2 [gamma - log(S^2 + e^gamma)]_{gamma_min}^{gamma_max},
    E[-log p(x | z_0)] = 1/2 (log 2 pi + gamma_min + 1),
    KL(q(z_1 | x) || N(0, 1)) = 1/2 (sigma_1^2 + alpha_1^2 (MU^2 + S^2) - 1 - log sigma_1^2),

which depend on the schedule only through its endpoints. Every term is a quadratic in (x, eps) at fixed t, so
its expectation is exact at the sigma points (+-1, +-1); t is integrated by Gauss-Legendre on geometric panels.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import sde_lib
from losses import vdm

MU, S = 0.3, 0.5
GAUSSIAN_ENTROPY = 0.5 * np.log(2 * np.pi * np.e * S**2)
SIGMA_X, SIGMA_Z = np.array([1.0, 1.0, -1.0, -1.0]), np.array([1.0, -1.0, 1.0, -1.0])


def exact_eps(gamma_fn, mu=MU, s=S):
    def eps_fn(z, t):
        alpha, sigma = vdm.alpha_sigma(gamma_fn(t)[:, None])
        return sigma * (z - alpha * mu) / (alpha**2 * s**2 + sigma**2)
    return eps_fn


def closed_form(gamma_min, gamma_max):
    alpha2, sigma2 = 1 / (1 + np.exp(gamma_max)), 1 / (1 + np.exp(-gamma_max))
    diffusion = 0.5 * ((gamma_max - np.log(S**2 + np.exp(gamma_max))) - (gamma_min - np.log(S**2 + np.exp(gamma_min))))
    reconstruction = 0.5 * (np.log(2 * np.pi) + gamma_min + 1)
    prior = 0.5 * (sigma2 + alpha2 * (MU**2 + S**2) - 1 - np.log(sigma2))
    return prior + reconstruction + diffusion


def quadrature_nodes():
    """Gauss-Legendre, 40 nodes on each panel [0, 1e-8], [1e-8, 1e-7], ..., [0.1, 1] (VPSDE's gamma' ~ 1 / t)."""
    edges = np.concatenate([[0.0], np.logspace(-8, 0, 9)])
    x, w = np.polynomial.legendre.leggauss(40)
    nodes = [(a + b) / 2 + (b - a) / 2 * x for a, b in zip(edges[:-1], edges[1:])]
    weights = [(b - a) / 2 * w for a, b in zip(edges[:-1], edges[1:])]
    return np.concatenate(nodes), np.concatenate(weights)


def expected_bound(gamma_fn):
    """E over x ~ N(MU, S^2), noise and t of the bound with the exact eps_hat (nats/dim), from the library's terms."""
    x, z = jnp.asarray(MU + S * SIGMA_X)[:, None], jnp.asarray(SIGMA_Z)[:, None]
    eps_fn, ones = exact_eps(gamma_fn), jnp.ones(4)

    def integrand(t):
        alpha, sigma = vdm.alpha_sigma(gamma_fn(t * ones)[:, None])
        return jnp.mean(vdm.diffusion_loss(gamma_fn, t * ones, z, eps_fn(alpha * x + sigma * z, t * ones)))

    nodes, weights = quadrature_nodes()
    diffusion = float(jnp.sum(jax.lax.map(integrand, jnp.asarray(nodes)) * weights))
    prior = float(jnp.mean(vdm.prior_kl(gamma_fn(ones), x)))
    reconstruction = float(jnp.mean(vdm.reconstruction_nll(gamma_fn(0 * ones), x, z, discrete=False)))
    return prior + reconstruction + diffusion


def monotone_gamma(seed=0, scale=1.0):
    module = vdm.MonotoneGamma(hidden=64)
    params = module.init(jax.random.PRNGKey(seed), jnp.zeros(3))
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    params = tree.unflatten([p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    return module, params


SCHEDULES = {
    "linear": lambda: vdm.linear_gamma(),
    "vp_sde": lambda: vdm.vp_sde_gamma(sde_lib.VPSDE(), eps=1e-5),
    "monotone": lambda: (lambda m, p: lambda t: m.apply(p, t))(*monotone_gamma()),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_expected_bound_is_the_closed_form_above_the_entropy(name):
    """The library's terms integrate to the closed form for every schedule (the bound depends only on the endpoints);
    the bound is above the Gaussian's entropy and within 1e-3 nats/dim of it (measured: linear [-13.3, 5] and the
    learned schedule between the same endpoints 3.1e-4, VPSDE [-13.8, 10.05] 4.0e-6)."""
    with jax.enable_x64(True):
        gamma_fn = SCHEDULES[name]()
        bound = expected_bound(gamma_fn)
        gamma_min, gamma_max = (float(g) for g in gamma_fn(jnp.array([0.0, 1.0])))
    np.testing.assert_allclose(bound, closed_form(gamma_min, gamma_max), rtol=1e-9)
    gap = bound - GAUSSIAN_ENTROPY
    print(f"{name}: gamma in [{gamma_min:.3f}, {gamma_max:.3f}], bound - entropy {gap:.3g} nats/dim")
    assert 0 < gap < 1e-3


@pytest.mark.parametrize("antithetic", [True, False])
def test_sampled_bound_is_unbiased(antithetic):
    gamma_fn, n = vdm.linear_gamma(), 200_000
    x = MU + S * jax.random.normal(jax.random.PRNGKey(0), (n, 1))
    terms = jax.jit(lambda r, x: vdm.vdm_bound(r, exact_eps(gamma_fn), x, gamma_fn, discrete=False,
                                               antithetic=antithetic))(jax.random.PRNGKey(1), x)
    total = terms.total
    se = float(jnp.std(total)) / np.sqrt(n)
    assert abs(float(jnp.mean(total)) - closed_form(vdm.GAMMA_MIN, vdm.GAMMA_MAX)) < 4 * se


def test_bound_bpd_of_8bit_data_is_above_its_entropy():
    """On pixels N(0.1, 0.25^2) rounded to the 8-bit grid, the discretised-decoder bound with the continuous
    Gaussian's eps is an upper bound on the discrete entropy (a loose one, measured 7.55 +- 0.14 against 7.04
    bits/dim: the model does not know the grid, and the decoder's std e^(gamma_min / 2) = 1.3e-3 is a third of the
    half bin)."""
    gamma_fn, mu, s = vdm.linear_gamma(), 0.1, 0.25
    levels = np.arange(256) / 127.5 - 1.0
    pmf = np.diff(stats.norm.cdf(np.concatenate([[-np.inf], levels[:-1] + 1 / 255, [np.inf]]), mu, s))
    entropy_bits = -np.sum(pmf * np.log2(np.maximum(pmf, 1e-300)))
    pixels = np.random.default_rng(0).choice(256, size=(4096, 2, 2, 1), p=pmf).astype(np.uint8)

    def eps_fn(z, t):
        return exact_eps(gamma_fn, mu, s)(z.reshape(len(z), -1), t).reshape(z.shape)

    bpd = jax.jit(lambda x, r: vdm.bound_bpd(eps_fn, x, gamma_fn, r))(pixels, jax.random.PRNGKey(2))
    se = float(jnp.std(bpd)) / np.sqrt(len(bpd))
    print(f"continuous bound {float(jnp.mean(bpd)):.4f} +- {se:.4f} bits/dim, discrete entropy {entropy_bits:.4f}")
    assert float(jnp.mean(bpd)) > entropy_bits - 4 * se


def test_monotone_gamma_is_increasing_and_hits_its_endpoints():
    """At initialisation and with its parameters pushed far from it (standard deviations 3 and 10)."""
    t = jnp.linspace(0.0, 1.0, 201)
    module = monotone_gamma()[0]
    slope = jax.jit(jax.vmap(jax.grad(lambda u, p: module.apply(p, u)), in_axes=(0, None)))
    gamma = jax.jit(module.apply)
    for seed, scale in [(0, 0.0), (1, 3.0), (2, 10.0)]:
        params = monotone_gamma(seed, scale)[1]
        assert float(jnp.min(slope(t, params))) > 0, (seed, scale)
        assert np.all(np.diff(np.asarray(gamma(params, t))) > 0)
        np.testing.assert_allclose(gamma(params, jnp.array([[0.0], [1.0]])), [[vdm.GAMMA_MIN], [vdm.GAMMA_MAX]],
                                   rtol=1e-6)


def test_vp_sde_gamma_gives_the_sde_marginals():
    sde, eps = sde_lib.VPSDE(), 1e-5
    t = jnp.linspace(0.0, 1.0, 11)
    alpha, sigma = vdm.alpha_sigma(vdm.vp_sde_gamma(sde, eps)(t))
    expected_alpha, expected_sigma = sde.marginal_coeffs(eps + (sde.T - eps) * t)
    np.testing.assert_allclose(alpha, expected_alpha, rtol=1e-5)
    np.testing.assert_allclose(sigma, expected_sigma, rtol=1e-4)
