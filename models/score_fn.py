"""The score parameterisation: a network's output turned into the plain score_fn(x, t) every sampler takes.

Preconditioning lives here, apart from the networks (as in EDM), and asks the SDE what it needs:

* what the network predicts (config.model.prediction, `PREDICTIONS`; 'default' is the SDE's own
  `sde.default_prediction`, score_sde's: 'epsilon' for VP / sub-VP, 'score' for VE), turned into the
  score by `score_from_prediction`, so every sampler applies unchanged;
* the noise conditioning c(t) = `sde.noise_label(t, continuous)` and the (alpha, sigma) the model was
  trained at, `sde.perturbation_coeffs(t, continuous)` (the discrete chain's for a discrete-time model;
  config.model.discrete_labels picks score_sde's labels or this framework's older 'floor_index').
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

import sde_lib
from models.registry import get_model


def init_model(rng: jax.Array, config, model=None, **inputs):
    """Initial variables of the model named by config (or of `model`), from a batch of one; `inputs` are further
    keyword inputs of that batch whose shapes the parameters follow (e.g. a zero `concat` condition image)."""
    model = model if model is not None else get_model(config)
    d = config.data
    x = jnp.zeros((1, d.image_size, d.image_size, d.num_channels), jnp.float32)
    t = jnp.zeros((1,), jnp.float32)
    params_rng, dropout_rng = jax.random.split(rng)
    return model.init({"params": params_rng, "dropout": dropout_rng}, x, t, train=False, **inputs)


def noise_conditioning(sde: sde_lib.SDE, t: jax.Array, continuous: bool) -> tuple[jax.Array, jax.Array]:
    """(c(t), sigma(t)): the network's noise conditioning and the perturbation std at time t."""
    return sde.noise_label(t, continuous), sde.perturbation_coeffs(t, continuous)[1]


#: What a network may predict of x_t = alpha x_0 + sigma eps; each gives eps, and s = -eps / sigma:
#:   'epsilon'  eps_hat = net
#:   'x0'       eps_hat = (x_t - alpha x0_hat) / sigma
#:   'v'        v = alpha eps - sigma x_0 (Salimans & Ho 2022; SD 2.x 768), so with x_0 = (x_t - sigma eps) / alpha,
#:              eps_hat = (alpha v_hat + sigma x_t) / (alpha^2 + sigma^2)
#: 'score' is the score itself, s = net [/ sigma with config.model.scale_by_sigma]; and 'edm' is EDM's
#: preconditioning (Karras et al. 2022, table 1) in the scaled variable x^ = x_t / alpha = x_0 + sigma_e eps,
#: sigma_e = sigma / alpha, sigma_d = config.model.sigma_data:
#:     D(x^) = c_skip x^ + c_out F(c_in x^),   c_skip = sigma_d^2 / (sigma_e^2 + sigma_d^2),
#:     c_out = sigma_e sigma_d / sqrt(sigma_e^2 + sigma_d^2),   c_in = 1 / sqrt(sigma_e^2 + sigma_d^2),
#: the denoiser x0_hat = D, so eps_hat = (x_t - alpha D) / sigma. The network sees c_in x^ (unit variance for
#: data of std sigma_d) and the SDE's own noise label in place of EDM's c_noise = log(sigma_e) / 4 (the same
#: information, on the scale the framework's time embeddings expect).
PREDICTIONS = ("epsilon", "x0", "v", "score", "edm")


def edm_input_scale(alpha, sigma, sigma_data: float):
    """c_in / alpha = 1 / sqrt(sigma^2 + alpha^2 sigma_d^2) (B,): EDM's network input c_in x^ as a multiple of x_t."""
    return jax.lax.rsqrt(sigma**2 + alpha**2 * sigma_data**2)


def score_from_prediction(prediction: str, out, x, alpha, sigma, scale_by_sigma: bool = False,
                          sigma_data: float = 0.5):
    """The score s(x_t, t) from a network output `out` that predicts `prediction` (PREDICTIONS) at (alpha, sigma)
    (B,); sigma_data is EDM's sigma_d ('edm' only)."""
    if prediction == "score":
        return sde_lib.batch_mul(1.0 / sigma, out) if scale_by_sigma else out
    if prediction == "edm":  # eps_hat = (x_t - alpha D) / sigma, written without its cancellation at small sigma:
        # (1 - c_skip) / sigma = sigma / (alpha^2 n^2), alpha c_out / sigma = sigma_d / n, n^2 = sigma_e^2 + sigma_d^2
        norm = jnp.sqrt((sigma / alpha) ** 2 + sigma_data**2)
        eps = sde_lib.batch_mul(sigma / (alpha * norm) ** 2, x) - sde_lib.batch_mul(sigma_data / norm, out)
    elif prediction == "epsilon":
        eps = out
    elif prediction == "x0":
        eps = sde_lib.batch_mul(1.0 / sigma, x - sde_lib.batch_mul(alpha, out))
    elif prediction == "v":
        eps = sde_lib.batch_mul(1.0 / (alpha**2 + sigma**2),
                                sde_lib.batch_mul(alpha, out) + sde_lib.batch_mul(sigma, x))
    else:
        raise ValueError(f"Unknown prediction {prediction!r}; choose one of {list(PREDICTIONS)}.")
    return sde_lib.batch_mul(-1.0 / sigma, eps)


def prediction_of(config, sde: sde_lib.SDE) -> str:
    """config.model.prediction, with 'default' resolved to the SDE's own (score_sde's parameterisation)."""
    prediction = config.model.get("prediction", "default")
    prediction = sde.default_prediction if prediction == "default" else prediction
    if prediction not in PREDICTIONS:
        raise ValueError(f"Unknown config.model.prediction {prediction!r}; choose one of {list(PREDICTIONS)} "
                         "or 'default'.")
    return prediction


def has_learned_variance(config) -> bool:
    """Whether the network outputs Nichol & Dhariwal's v beside its prediction (config.model.learned_variance)."""
    return bool(config.model.get("learned_variance", False))


def check_learned_variance(config, model=None) -> None:
    """ValueError unless a learned-variance network outputs the 2C channels it needs (traced, not run)."""
    if not has_learned_variance(config):
        return
    model = model if model is not None else get_model(config)
    channels = config.data.num_channels
    out = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), jnp.zeros(
        (1, config.data.image_size, config.data.image_size, channels)), jnp.zeros((1,)))[0])
    if out.shape[-1] != 2 * channels:
        raise ValueError(f"config.model.learned_variance=True needs a network that outputs 2C = {2 * channels} "
                         f"channels, but config.model.name={config.model.name!r} outputs {out.shape[-1]}; use "
                         f"'ddpm' or 'ncsnpp', or set learned_variance=False.")


def get_score_fn(sde: sde_lib.SDE, model, variables, train: bool = False, continuous: bool = True,
                 rng: jax.Array | None = None, labels: jax.Array | None = None, with_variance: bool = False,
                 **conditions):
    """score_fn(x, t) -> grad_x log p_t(x | condition) estimated by `model` with `variables`.

    `rng` feeds dropout when train=True; `labels` are class labels for a
    class-conditional model (None for an unconditional one); `conditions` are the
    network's other keyword inputs the score function closes over, e.g. `context`
    (a prompt's encoder states, (B, L, D)) or `control` (ControlNet residuals); those
    given as None are not passed, so networks without such inputs take the same call.

    A learned-variance network (config.model.learned_variance) outputs 2C channels: the score is made from the
    first C; with_variance=True returns fn(x, t) -> (score, v) from one network call, v = (v_raw + 1) / 2 from
    the last C, the fraction of the reverse step's log Sigma = v log beta + (1 - v) log beta~ (get_variance_fn).
    """
    if train and rng is None:
        raise ValueError("get_score_fn(train=True) needs an rng for dropout.")
    learned = has_learned_variance(model.config)
    if with_variance and not learned:
        raise ValueError("with_variance=True needs a learned-variance model (config.model.learned_variance=True).")
    scale_by_sigma = model.config.model.get("scale_by_sigma", False)
    sigma_data = model.config.model.get("sigma_data", 0.5)
    prediction = prediction_of(model.config, sde)
    given = {name: value for name, value in conditions.items() if value is not None}

    def score_and_variance(x, t):
        alpha, sigma = sde.perturbation_coeffs(t, continuous)
        x_in = x if prediction != "edm" else sde_lib.batch_mul(edm_input_scale(alpha, sigma, sigma_data), x)
        out = model.apply(variables, x_in, sde.noise_label(t, continuous), labels=labels, train=train,
                          rngs={"dropout": rng} if train else None, **given).astype(jnp.float32)
        channels = x.shape[-1]
        score = score_from_prediction(prediction, out[..., :channels] if learned else out, x, alpha, sigma,
                                      scale_by_sigma, sigma_data)
        return score, (0.5 * (out[..., channels:] + 1.0) if learned else None)

    if with_variance:
        return score_and_variance
    return lambda x, t: score_and_variance(x, t)[0]


def get_variance_fn(sde: sde_lib.SDE, model, variables, continuous: bool = True,
                    labels: jax.Array | None = None, **conditions):
    """variance_fn(x, t) -> v (B, ...) of a learned-variance model (get_score_fn's, at train=False): what the
    samplers that draw a variance (pc's ancestral predictor, DDIM with eta > 0) take beside score_fn. Called
    with score_fn at the same (x, t) in one jit, the two network calls are one (XLA's CSE)."""
    fn = get_score_fn(sde, model, variables, continuous=continuous, labels=labels, with_variance=True, **conditions)
    return lambda x, t: fn(x, t)[1]
