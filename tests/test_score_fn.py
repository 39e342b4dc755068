"""The score parameterisations of models/score_fn.py: for Gaussian data x_0 ~ N(mu, s^2 I) the exact
epsilon, x_0, v and score predictors give the same score, through get_score_fn, for VP and VE.

With x_t = alpha x_0 + sigma eps, x_t ~ N(alpha mu, k I), k = alpha^2 s^2 + sigma^2, and

    score = -(x_t - alpha mu) / k,   E[eps | x_t] = sigma (x_t - alpha mu) / k,
    E[x_0 | x_t] = mu + alpha s^2 (x_t - alpha mu) / k,   E[v | x_t] = alpha E[eps | x_t] - sigma E[x_0 | x_t].
"""
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import models
import sde_lib
from models import score_fn

MU, S = 0.7, 1.6
SIGMA_DATA = 0.5  # EDM's sigma_d, config.model.sigma_data's default


def exact_predictions(x, alpha, sigma):
    alpha, sigma = alpha[:, None], sigma[:, None]
    k = alpha**2 * S**2 + sigma**2
    eps = sigma * (x - alpha * MU) / k
    x0 = MU + alpha * S**2 * (x - alpha * MU) / k
    return {"epsilon": eps, "x0": x0, "v": alpha * eps - sigma * x0, "score": -(x - alpha * MU) / k,
            "edm": exact_edm(x, alpha, sigma)}


def exact_edm(x, alpha, sigma):
    """EDM's exact F, solving D = c_skip x / alpha + c_out F = E[x_0 | x_t] in float64 (c_out -> 0 as sigma -> 0)."""
    x, alpha, sigma = (np.asarray(v, np.float64) for v in (x, alpha, sigma))
    k = alpha**2 * S**2 + sigma**2
    norm2 = (sigma / alpha) ** 2 + SIGMA_DATA**2  # EDM's table 1 with sigma_e = sigma / alpha
    c_skip, c_out = SIGMA_DATA**2 / norm2, sigma / alpha * SIGMA_DATA / np.sqrt(norm2)
    return jnp.asarray((MU + alpha * S**2 * (x - alpha * MU) / k - c_skip * x / alpha) / c_out, jnp.float32)


class ExactPredictor:
    """A stand-in network: the exact predictor of `prediction`, reading t back from the noise label."""

    def __init__(self, sde, prediction):
        self.sde, self.prediction = sde, prediction
        self.config = ml_collections.ConfigDict({"model": {"prediction": prediction, "scale_by_sigma": False}})

    def apply(self, variables, x, label, labels=None, train=False, rngs=None):
        t = label / 999.0 if self.sde.default_prediction == "epsilon" else self.sde.t_from_log_snr(-jnp.log(label))
        alpha, sigma = self.sde.marginal_coeffs(t)
        if self.prediction == "edm":  # the network sees c_in x_t / alpha
            x = x / score_fn.edm_input_scale(alpha, sigma, SIGMA_DATA)[:, None]
        return exact_predictions(x, alpha, sigma)[self.prediction]


SDES = [sde_lib.VPSDE(), sde_lib.VPSDE(beta_schedule="cosine"), sde_lib.subVPSDE(), sde_lib.VESDE(sigma_max=5.0)]
SDE_IDS = ["vp", "vp-cosine", "subvp", "ve"]


def probe(sde):
    t = jnp.asarray([0.01, 0.2, 0.5, 0.9], jnp.float32)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6)) * 2.0, jnp.float32)
    return x, t, *sde.marginal_coeffs(t)


def max_relative_error(ours, exact):
    return float(np.max(np.abs(np.asarray(ours) - np.asarray(exact))) / np.max(np.abs(exact)))


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_exact_predictors_give_the_exact_score(sde):
    """To float32 precision: epsilon, v and score to 2e-6 of the largest score; x0 within its rounding bound,
    eps_hat = (x_t - alpha x0_hat) / sigma turning x0_hat's rounding (eps32 |x|) into eps32 |x| / sigma^2 of score."""
    x, t, alpha, sigma = probe(sde)
    exact = exact_predictions(x, alpha, sigma)
    for prediction in score_fn.PREDICTIONS:
        score = score_fn.score_from_prediction(prediction, exact[prediction], x, alpha, sigma)
        if prediction == "x0":
            bound = 4 * np.finfo(np.float32).eps * (np.max(np.abs(x), axis=1) + MU) / np.asarray(sigma) ** 2
            assert np.all(np.max(np.abs(np.asarray(score - exact["score"])), axis=1) <= bound)
        else:
            assert max_relative_error(score, exact["score"]) < 2e-6, prediction


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_get_score_fn_applies_the_configured_prediction(sde):
    """Through get_score_fn, with each exact predictor standing in for the network (x0 left out: its float32
    rounding is the test above's, and the stand-in's t, read back from the float32 label, adds to it)."""
    x, t, alpha, sigma = probe(sde)
    exact = exact_predictions(x, alpha, sigma)["score"]
    for prediction in ("epsilon", "v", "score", "edm"):
        score = models.get_score_fn(sde, ExactPredictor(sde, prediction), None)(x, t)
        assert max_relative_error(score, exact) < 1e-4, prediction


def test_default_prediction_is_the_sdes_and_unknown_ones_fail():
    config = ml_collections.ConfigDict({"model": {"prediction": "default"}})
    assert score_fn.prediction_of(config, sde_lib.VPSDE()) == "epsilon"
    assert score_fn.prediction_of(config, sde_lib.VESDE()) == "score"
    config.model.prediction = "velocity"
    with pytest.raises(ValueError, match="config.model.prediction 'velocity'"):
        score_fn.prediction_of(config, sde_lib.VPSDE())


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_edm_preconditioning_makes_the_zero_network_exact_for_data_of_std_sigma_data(sde):
    """For x_0 ~ N(0, sigma_d^2 I), E[x_0 | x^] = sigma_d^2 / (sigma_e^2 + sigma_d^2) x^ = c_skip x^: the optimal F is
    0, and with F = 0 the score is the exact -x_t / (alpha^2 sigma_d^2 + sigma^2)."""
    x, t, alpha, sigma = probe(sde)
    score = score_fn.score_from_prediction("edm", jnp.zeros_like(x), x, alpha, sigma, sigma_data=SIGMA_DATA)
    exact = -x / (alpha[:, None] ** 2 * SIGMA_DATA**2 + sigma[:, None] ** 2)
    assert max_relative_error(score, exact) < 2e-6
