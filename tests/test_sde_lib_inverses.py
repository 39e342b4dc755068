"""The inverse maps the fast solvers add to sde_lib, checked by round trips against the forward formulas."""
import jax.numpy as jnp
import numpy as np
import pytest

import sde_lib

SDES = {"vp": sde_lib.VPSDE(), "subvp": sde_lib.subVPSDE(), "ve": sde_lib.VESDE()}


@pytest.mark.parametrize("name", sorted(SDES))
def test_log_snr_round_trip(name):
    sde = SDES[name]
    t = jnp.concatenate([jnp.geomspace(1e-5, 1e-2, 20), jnp.linspace(2e-2, sde.T, 50)])
    lam = sde.log_snr(t)
    assert np.all(np.diff(np.asarray(lam)) < 0), "log_snr must decrease in t"
    np.testing.assert_allclose(sde.t_from_log_snr(lam), t, rtol=1e-5, atol=1e-7)  # atol: float32 lambda near 4.6 for VE
    # and the other way round, on a lambda grid covering the SDE's range
    grid = jnp.linspace(float(lam[-1]), float(lam[0]), 40)
    np.testing.assert_allclose(sde.log_snr(sde.t_from_log_snr(grid)), grid, rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("name", ["vp", "subvp"])
def test_t_from_log_alpha_inverts_log_alpha(name):
    sde = SDES[name]
    t = jnp.linspace(0.0, 1.0, 33)
    np.testing.assert_allclose(sde.t_from_log_alpha(sde.log_alpha(t)), t, atol=1e-6)
    # a constant beta (beta_min == beta_max) is the a -> 0 limit the stable root formula must survive
    flat = sde_lib.VPSDE(beta_min=5.0, beta_max=5.0)
    np.testing.assert_allclose(flat.t_from_log_alpha(flat.log_alpha(t)), t, atol=1e-6)


def test_ve_edm_sigma_is_sigma():
    sde = SDES["ve"]
    t = jnp.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(jnp.exp(-sde.log_snr(t)), sde.sigma(t), rtol=1e-5)
