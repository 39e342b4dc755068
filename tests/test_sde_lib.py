"""sde_lib against closed forms: moment ODEs, Monte-Carlo runs of the chains, scipy, the DDPM chain."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import sde_lib

jax.config.update("jax_enable_x64", False)

ALL_SDES = [sde_lib.VPSDE(), sde_lib.subVPSDE(), sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0)]
IDS = ["vp", "subvp", "ve"]
#: The other beta schedules (Stable Diffusion's scaled_linear, the cosine schedule) on the VP / sub-VP SDEs.
SCHEDULED = [sde_lib.VPSDE(beta_min=0.85, beta_max=12.0, beta_schedule="scaled_linear"),
             sde_lib.VPSDE(beta_schedule="cosine"), sde_lib.subVPSDE(beta_schedule="cosine")]
SCHEDULED_IDS = ["vp-scaled_linear", "vp-cosine", "subvp-cosine"]


@pytest.mark.parametrize("sde", ALL_SDES + SCHEDULED, ids=IDS + SCHEDULED_IDS)
def test_marginal_coeffs_solve_the_moment_odes(sde):
    """For dx = f(t) x dt + g(t) dw: d alpha/dt = f alpha and d sigma^2/dt = 2 f sigma^2 + g^2."""
    def f(t):  # drift coefficient: f(x, t) / x
        return sde.sde(jnp.ones((1, 1)), t[None])[0][0, 0]

    def g2(t):
        return sde.sde(jnp.ones((1, 1)), t[None])[1][0] ** 2

    alpha = lambda t: sde.marginal_coeffs(t[None])[0][0]
    var = lambda t: sde.marginal_coeffs(t[None])[1][0] ** 2
    for t in [0.05, 0.3, 0.7, 0.95]:
        t = jnp.float32(t)
        np.testing.assert_allclose(jax.grad(alpha)(t), f(t) * alpha(t), rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(jax.grad(var)(t), 2 * f(t) * var(t) + g2(t), rtol=2e-4, atol=1e-5)
    # p_0 is the data: alpha(0) = 1, sigma(0) = 0 (VE starts at sigma_min by convention).
    a0, s0 = sde.marginal_coeffs(jnp.zeros(1))
    assert float(a0[0]) == 1.0
    assert float(s0[0]) == pytest.approx(sde.sigma_min if isinstance(sde, sde_lib.VESDE) else 0.0, abs=1e-7)


@pytest.mark.parametrize("sde", ALL_SDES, ids=IDS)
def test_marginal_prob_matches_monte_carlo_of_euler_maruyama(sde):
    """Simulate the forward SDE from x_0 with 1000 Euler-Maruyama steps; compare mean/std at t = 0.5, 1."""
    n, x0 = 20000, 1.5
    t_end = jnp.array([0.5, 1.0])
    steps = 1000
    x = jnp.full((n, 2), x0)  # one column per end time
    rng = jax.random.PRNGKey(0)

    def body(k, carry):
        x, rng = carry
        rng, sub = jax.random.split(rng)
        dt = t_end / steps
        t = k * dt
        drift = jnp.stack([sde.sde(x[:, j:j + 1], jnp.full((n,), t[j]))[0][:, 0] for j in range(2)], 1)
        diff = jnp.stack([sde.sde(x[:, j:j + 1], jnp.full((n,), t[j]))[1] for j in range(2)], 1)
        return x + drift * dt + diff * jnp.sqrt(dt) * jax.random.normal(sub, x.shape), rng

    if isinstance(sde, sde_lib.VESDE):  # start at the t = 0 marginal N(x0, sigma_min^2)
        x = x + sde.sigma_min * jax.random.normal(jax.random.PRNGKey(1), x.shape)
    x, _ = jax.lax.fori_loop(0, steps, body, (x, rng))
    mean, std = sde.marginal_prob(jnp.full((2, 1), x0), t_end)
    mean, std = np.asarray(mean[:, 0]), np.asarray(std)
    mc_mean, mc_std = np.asarray(x.mean(0)), np.asarray(x.std(0))
    # Monte-Carlo standard errors: std/sqrt(n) for the mean, std/sqrt(2n) for the std; 5 of them,
    # plus 1% for the O(dt) Euler-Maruyama bias.
    assert np.all(np.abs(mc_mean - mean) <= 5 * std / np.sqrt(n) + 0.01 * np.abs(mean) + 1e-3), (mc_mean, mean)
    assert np.all(np.abs(mc_std - std) <= 5 * std / np.sqrt(2 * n) + 0.01 * std), (mc_std, std)


@pytest.mark.parametrize("sde", [sde_lib.VPSDE(N=200), sde_lib.VESDE(N=200)], ids=["vp", "ve"])
def test_discrete_chain_marginal_matches_monte_carlo(sde):
    """Run the SDE's own chain x_{i+1} = x_i + f_i + G_i z from x_0 over steps i = 0..N-1; its law
    after step i is N(alpha_i x_0, sigma_i^2 I) with (alpha_i, sigma_i) = discrete_marginal_coeffs(i)."""
    n, x0 = 20000, 1.5

    def body(i, carry):
        x, rng = carry
        rng, sub = jax.random.split(rng)
        f, G = sde.discretize(x, jnp.full((n,), sde.step_time(i)))
        return x + f + sde_lib.batch_mul(G, jax.random.normal(sub, x.shape)), rng

    x, _ = jax.lax.fori_loop(0, sde.N, body, (jnp.full((n, 1), x0), jax.random.PRNGKey(0)))
    alpha, sigma = (float(c[0]) for c in sde.discrete_marginal_coeffs(jnp.array([sde.N - 1])))
    # 5 Monte-Carlo standard errors of the mean and of the std.
    assert abs(float(x.mean()) - alpha * x0) < 5 * sigma / np.sqrt(n)
    assert abs(float(x.std()) - sigma) < 5 * sigma / np.sqrt(2 * n)


def test_vp_discretize_is_the_ddpm_chain():
    sde = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000)
    betas = np.linspace(0.1 / 1000, 20.0 / 1000, 1000)
    i = np.array([0, 1, 500, 998, 999])
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    f, G = sde.discretize(jnp.asarray(x), sde.step_time(jnp.asarray(i)))
    np.testing.assert_allclose(np.asarray(x + f), np.sqrt(1 - betas[i])[:, None] * x, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(G), np.sqrt(betas[i]), rtol=1e-6)
    # alpha_bar_i = prod_{j<=i} (1 - beta_j): the chain's marginal after step i.
    alpha, sigma = sde.discrete_marginal_coeffs(jnp.asarray(i))
    np.testing.assert_allclose(np.asarray(alpha) ** 2, np.cumprod(1 - betas)[i], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(sigma) ** 2, 1 - np.cumprod(1 - betas)[i], rtol=1e-5, atol=1e-7)
    # ... and it tracks the continuous marginal: log alpha_bar_i = sum_j log(1 - beta_j) = -sum_j beta_j + r
    # with |r| <= sum_j beta_j^2, while -sum_j beta_j is a Riemann sum of -int beta = 2 log alpha(t_i).
    cont_alpha, _ = sde.marginal_coeffs(jnp.asarray((i + 1) / 1000.0))
    gap = np.abs(2 * np.log(np.asarray(alpha, np.float64)) - 2 * np.log(np.asarray(cont_alpha, np.float64)))
    assert np.all(gap <= np.cumsum(betas**2)[i] + 1e-3), gap


def test_ve_discretize_adds_the_smld_increments():
    sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, N=10)
    sigmas = np.exp(np.linspace(np.log(0.01), np.log(50.0), 10))
    i = np.arange(10)
    f, G = sde.discretize(jnp.ones((10, 2)), sde.step_time(jnp.asarray(i)))
    np.testing.assert_array_equal(np.asarray(f), 0.0)
    previous = np.concatenate([[0.0], sigmas[:-1]])
    np.testing.assert_allclose(np.asarray(G) ** 2, sigmas**2 - previous**2, rtol=1e-5)


@pytest.mark.parametrize("sde", ALL_SDES, ids=IDS)
def test_prior_logp_matches_scipy(sde):
    z = np.random.default_rng(0).normal(size=(4, 3, 5, 2)).astype(np.float32) * sde.prior_scale
    expected = scipy.stats.norm(0, sde.prior_scale).logpdf(z.astype(np.float64)).reshape(4, -1).sum(-1)
    np.testing.assert_allclose(np.asarray(sde.prior_logp(jnp.asarray(z))), expected, rtol=1e-5)
    samples = sde.prior_sampling(jax.random.PRNGKey(0), (20000, 2))
    assert float(jnp.std(samples)) == pytest.approx(sde.prior_scale, rel=0.02)


@pytest.mark.parametrize("sde", ALL_SDES + SCHEDULED, ids=IDS + SCHEDULED_IDS)
@pytest.mark.parametrize("probability_flow", [False, True])
def test_reverse_sde_formula(sde, probability_flow):
    """Reverse drift f - g^2 s (SDE) or f - g^2 s / 2 (probability flow), diffusion g or 0."""
    score_fn = lambda x, t: -x * (1.0 + t[:, None])  # any function of (x, t)
    rsde = sde.reverse(score_fn, probability_flow)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4)), jnp.float32)
    t = jnp.array([0.1, 0.5, 0.9])
    f, g = sde.sde(x, t)
    weight = 0.5 if probability_flow else 1.0
    drift, diffusion = rsde.sde(x, t)
    np.testing.assert_allclose(drift, f - weight * g[:, None] ** 2 * score_fn(x, t), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(diffusion, 0.0 if probability_flow else g, rtol=1e-6)
    fd, Gd = sde.discretize(x, t)
    rf, rG = rsde.discretize(x, t)
    np.testing.assert_allclose(rf, fd - weight * Gd[:, None] ** 2 * score_fn(x, t), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rG, 0.0 if probability_flow else Gd, rtol=1e-6)


@pytest.mark.parametrize("sde", ALL_SDES, ids=IDS)
def test_timestep_conventions(sde):
    i = jnp.arange(sde.N)
    np.testing.assert_array_equal(sde.timestep(sde.step_time(i)), i)
    # the sampler grid linspace(T, eps, N) visits every discrete step exactly once
    grid = sde.timestep(jnp.linspace(sde.T, sde.sampling_eps, sde.N))
    np.testing.assert_array_equal(grid, np.arange(sde.N)[::-1])


def test_subvp_has_no_discrete_chain_and_unknown_names_fail():
    with pytest.raises(NotImplementedError, match="continuous=True"):
        sde_lib.subVPSDE().discrete_marginal_coeffs(jnp.zeros(1, jnp.int32))
    from configs.vp import ddpm_digits

    config = ddpm_digits.get_config()
    config.training.sde = "bogus"
    with pytest.raises(ValueError, match="Unknown SDE 'bogus'.*vesde"):
        sde_lib.from_config(config)


# --- noise conditioning of the networks (score_sde's conventions and the older floor_index) -------

T_PROBE = jnp.array([0.93, 0.41, 0.013, 0.5004, 1.0, 0.0])


def test_continuous_labels_are_999t_for_vp_and_sigma_for_ve():
    for sde in ALL_SDES[:2]:
        np.testing.assert_allclose(sde.noise_label(T_PROBE), 999.0 * T_PROBE, rtol=1e-6)
    ve = ALL_SDES[2]
    np.testing.assert_allclose(ve.noise_label(T_PROBE), ve.sigma(T_PROBE), rtol=1e-6)


@pytest.mark.parametrize("labels", sde_lib.DISCRETE_LABELS)
def test_discrete_vp_labels_and_sigmas(labels):
    """score_sde: label t (N-1) unrounded, sigma of step floor(t (N-1)); floor_index: label floor(t (N-1))."""
    sde = sde_lib.VPSDE(N=1000, discrete_labels=labels)
    t = np.asarray(T_PROBE, np.float64)
    floor = np.clip(np.floor(t * 999), 0, 999).astype(int)
    expected = t * 999 if labels == "score_sde" else floor
    np.testing.assert_allclose(sde.noise_label(T_PROBE, continuous=False), expected, rtol=1e-6)
    _, sigma = sde.perturbation_coeffs(T_PROBE, continuous=False)
    np.testing.assert_allclose(sigma, np.sqrt(1 - sde.alphas_cumprod[floor]), rtol=1e-5)


def test_discrete_ve_labels_index_the_descending_sigmas_under_score_sde():
    """score_sde: label round((1 - t)(N-1)) into sigma_max ... sigma_min; floor_index: floor(t (N-1)) ascending."""
    t = np.asarray(T_PROBE, np.float64)
    ref = sde_lib.VESDE(N=1000)
    label = np.round((1 - t) * 999).astype(int)
    descending = np.exp(np.linspace(np.log(50.0), np.log(0.01), 1000))
    np.testing.assert_array_equal(ref.noise_label(T_PROBE, continuous=False), label)
    np.testing.assert_allclose(ref.perturbation_coeffs(T_PROBE, continuous=False)[1], descending[label], rtol=1e-5)
    old = sde_lib.VESDE(N=1000, discrete_labels="floor_index")
    floor = np.floor(t * 999).astype(int)
    np.testing.assert_array_equal(old.noise_label(T_PROBE, continuous=False), floor)
    np.testing.assert_allclose(old.perturbation_coeffs(T_PROBE, continuous=False)[1], descending[::-1][floor],
                               rtol=1e-5)


@pytest.mark.parametrize("labels", sde_lib.DISCRETE_LABELS)
@pytest.mark.parametrize("cls", [sde_lib.VPSDE, sde_lib.VESDE], ids=["vp", "ve"])
def test_step_time_is_step_i_for_the_chain_and_the_network(cls, labels):
    """The losses train step i at step_time(i); the network's sigma there must be sigma_i."""
    sde = cls(N=1000, discrete_labels=labels)
    i = jnp.arange(sde.N)
    np.testing.assert_array_equal(sde.network_step(sde.step_time(i)), i)
    np.testing.assert_array_equal(sde.timestep(sde.step_time(i)), i)


def test_unknown_discrete_labels_fail_and_from_config_passes_them_on():
    with pytest.raises(ValueError, match="discrete_labels.*floor_index"):
        sde_lib.VESDE(discrete_labels="descending")
    from configs.vp import ddpm_cifar10, ddpm_digits

    assert sde_lib.from_config(ddpm_cifar10.get_config()).discrete_labels == "score_sde"
    assert sde_lib.from_config(ddpm_digits.get_config()).discrete_labels == "floor_index"


def test_what_the_network_predicts_is_answered_by_the_sde():
    assert [sde.default_prediction for sde in ALL_SDES] == ["epsilon", "epsilon", "score"]
    assert [sde.has_discrete_chain for sde in ALL_SDES] == [True, False, True]


# --- beta schedules: scaled_linear (Stable Diffusion) and cosine (Nichol & Dhariwal 2021) --------------

def test_scaled_linear_chain_is_stable_diffusions():
    sde = SCHEDULED[0]
    i = np.arange(1000)
    expected = (np.sqrt(0.00085) + i * (np.sqrt(0.012) - np.sqrt(0.00085)) / 999) ** 2
    np.testing.assert_allclose(sde.discrete_betas, expected, rtol=1e-12)


def test_cosine_chain_is_the_ratio_of_alpha_bars_clipped():
    sde = SCHEDULED[1]
    t = np.linspace(0, 1, 1001)
    alpha_bar = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2 / np.cos(0.008 / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(sde.discrete_betas, np.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], 0.999), rtol=1e-9)
    assert sde.discrete_betas[-1] == 0.999


@pytest.mark.parametrize("sde", [ALL_SDES[0]] + SCHEDULED[:2], ids=["linear", "scaled_linear", "cosine"])
def test_chain_alphas_cumprod_track_the_continuous_marginal(sde):
    """alpha_bar_i (the chain) against alpha(t)^2 at t = (i+1)/N: exactly equal for the cosine schedule
    (its betas are ratios of alpha_bar) until the clipping, and for the (scaled) linear ones within the
    Riemann-sum bound of test_vp_discretize_is_the_ddpm_chain."""
    i = np.arange(sde.N)
    alpha, _ = sde.discrete_marginal_coeffs(jnp.asarray(i))
    cont_alpha, _ = sde.marginal_coeffs(jnp.asarray((i + 1) / sde.N))
    log_gap = np.abs(2 * np.log(np.asarray(alpha, np.float64)) - 2 * np.log(np.asarray(cont_alpha, np.float64)))
    if sde.beta_schedule == "cosine":
        unclipped = (i + 1) / sde.N < sde.T
        np.testing.assert_allclose(np.asarray(alpha)[unclipped] ** 2, np.asarray(cont_alpha)[unclipped] ** 2,
                                   rtol=1e-4, atol=1e-6)
    else:
        assert np.all(log_gap <= np.cumsum(sde.discrete_betas**2) + 1e-3), log_gap


@pytest.mark.parametrize("sde", SCHEDULED, ids=SCHEDULED_IDS)
def test_schedule_beta_is_minus_the_derivative_of_log_alpha_bar_and_inverts(sde):
    t = jnp.array([0.0, 0.1, 0.5, 0.9, 0.99 * sde.T])
    d_log_alpha_bar = jax.vmap(jax.grad(lambda s: 2.0 * sde.log_alpha(s)))(t)
    np.testing.assert_allclose(sde.beta(t), -d_log_alpha_bar, rtol=1e-4)
    np.testing.assert_allclose(sde.t_from_log_alpha(sde.log_alpha(t)), t, atol=2e-5)
    np.testing.assert_allclose(sde.t_from_log_snr(sde.log_snr(t[1:])), t[1:], atol=5e-5)


@pytest.mark.parametrize("sde,alpha_T", [
    (ALL_SDES[0], np.exp(-(0.1 + 20.0) / 4)),  # log alpha(1) = -(beta_min + beta_max) / 4
    (SCHEDULED[0], np.exp(-(0.85 + np.sqrt(0.85 * 12.0) + 12.0) / 6)),  # -(a^2 + ab + b^2) / 6
    (SCHEDULED[1], np.cos(np.arctan(999 * 1.008 / np.pi)) / np.cos(0.008 / 1.008 * np.pi / 2)),
], ids=["linear", "scaled_linear", "cosine"])
def test_signal_left_at_T_in_closed_form(sde, alpha_T):
    """p_T = N(alpha(T) x_0, (1 - alpha(T)^2) I) against the prior N(0, I). The cosine SDE ends at T < 1, where
    beta(T) = 999 (beta -> inf as t -> 1), with alpha(T) = 3e-3; Stable Diffusion's scaled_linear schedule
    leaves alpha(1) = 0.069 of the data (its known non-zero terminal SNR), linear VP 6.6e-3."""
    alpha, sigma = sde.marginal_coeffs(jnp.array([sde.T]))
    assert float(alpha[0]) == pytest.approx(alpha_T, rel=1e-4)
    assert float(sigma[0]) ** 2 == pytest.approx(1.0 - alpha_T**2, rel=1e-5)
    if sde.beta_schedule == "cosine":
        assert 0.99 < sde.T < 1.0 and float(sde.beta(jnp.float32(sde.T))) == pytest.approx(999.0, rel=1e-3)


def test_beta_schedule_comes_from_the_config_and_unknown_ones_fail():
    from configs.vp import ddpm_cifar10

    config = ddpm_cifar10.get_config()
    config.model.beta_schedule = "cosine"
    assert sde_lib.from_config(config).schedule == sde_lib.CosineSchedule()
    with pytest.raises(ValueError, match="beta_schedule 'sigmoid'.*scaled_linear"):
        sde_lib.VPSDE(beta_schedule="sigmoid")
