"""A score model's variational losses on the discrete VP (DDPM) chain: config.training.loss 'vlb' and 'hybrid'.

A score model trained in discrete time (training.continuous=False) on an sde_lib.VPSDE (any beta schedule) is
the reverse chain of losses/vlb.py through

    eps_theta(x_t, t) = -sqrt(1 - alpha_bar_t) s_theta(x_t, sde.step_time(i)),   i = t - 1,

(the network's own eps for an epsilon-prediction model) and, with config.model.learned_variance, its variance
fraction v_theta (models.get_score_fn(with_variance=True)), v_raw = 2 v - 1. Per batch, in bits/dim (D dims):

    'vlb'     L_vlb    = mean_b (L_T + L_{i_b} / p_{i_b}) / (D ln 2),   i_b ~ p: uniform 1 / N ('uniform') or
                         Nichol & Dhariwal's p_t ~ sqrt(E[L_t^2]) from the history of terms ('importance');
    'hybrid'  L_hybrid = mean_b L_simple + lambda (N / 1000) L_{i_b}[eps -> stop_gradient(eps)] / (D ln 2),
                         i_b uniform (vlb.hybrid_loss: the bound trains only the variance).

The importance history (vlb.LossHistory) rides in the train state's model_state under HISTORY, so a resumed run
draws the same t as an uninterrupted one.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
from losses import vlb

LOSSES = ("dsm", "edm", "vlb", "hybrid")
SAMPLINGS = ("uniform", "importance")
HISTORY = "vlb_history"  # the model_state collection of the importance history


def check_options(sde: sde_lib.SDE, loss: str, continuous: bool, learned_variance: bool,
                  sampling: str = "uniform") -> None:
    """ValueError, in one line, when config.training.loss cannot train this model."""
    if loss not in LOSSES:
        raise ValueError(f"Unknown config.training.loss {loss!r}; choose one of {list(LOSSES)}.")
    if sampling not in SAMPLINGS:
        raise ValueError(f"Unknown config.training.vlb_sampling {sampling!r}; choose one of {list(SAMPLINGS)}.")
    if sampling == "importance" and loss != "vlb":
        raise ValueError(f"config.training.vlb_sampling='importance' draws the t of the 'vlb' loss; "
                         f"training.loss is {loss!r}.")
    if loss in ("dsm", "edm"):  # denoising score matching (losses.objectives), uniform or EDM's levels
        if learned_variance:
            raise ValueError(f"config.model.learned_variance=True is trained by training.loss 'vlb' or 'hybrid'; "
                             f"{loss!r} never trains the variance channels.")
        return
    if continuous:
        raise ValueError(f"config.training.loss={loss!r} is the discrete chain's bound; set "
                         f"training.continuous=False (a continuous-time model's bound is likelihood_weighting=True).")
    if not isinstance(sde, sde_lib.VPSDE):
        raise ValueError(f"config.training.loss={loss!r} needs the VP SDE's DDPM chain, not {type(sde).__name__}.")
    if loss == "hybrid" and not learned_variance:
        raise ValueError("config.training.loss='hybrid' trains a learned variance; set "
                         "config.model.learned_variance=True (or use loss 'vlb' or 'dsm').")


def chain_eps_fn(sde: sde_lib.VPSDE, fn, learned_variance: bool):
    """eps_fn(x_t, i) -> eps, or (eps, v_raw) with learned_variance, as vlb.bound_terms takes it, from
    fn(x, t) -> score, or (score, v) (models.get_score_fn(..., continuous=False[, with_variance=True]))."""
    def eps_fn(x, i):
        sigma = sde.discrete_marginal_coeffs(i)[1]
        out = fn(x, sde.step_time(i))
        if learned_variance:
            return -sde_lib.batch_mul(sigma, out[0]), 2.0 * out[1] - 1.0
        return -sde_lib.batch_mul(sigma, out)
    return eps_fn


def variance_of(learned_variance: bool) -> str:
    """The reverse variance of the bound: the learned one, else DDPM's beta_t ('large', the ancestral sampler's)."""
    return "learned" if learned_variance else "large"


def init_history(sde: sde_lib.VPSDE) -> dict:
    """The empty importance history, as the model_state collection HISTORY."""
    return vlb.init_history(sde.N)._asdict()


def vlb_loss(rng: jax.Array, fn, x0: jax.Array, sde: sde_lib.VPSDE, learned_variance: bool,
             history: dict | None = None):
    """(L_vlb, (i, L_i)): the batch's bound estimate in bits/dim, t uniform (history None) or importance-sampled
    from `history` (init_history's); i and the terms L_i (B,) nats feed update_history."""
    chain = vlb.DiscreteChain.from_sde(sde)
    probs = jnp.full((sde.N,), 1.0 / sde.N) if history is None else vlb.timestep_probs(vlb.LossHistory(**history))
    bound, i, term = vlb.sampled_bound(rng, chain, chain_eps_fn(sde, fn, learned_variance), x0, probs,
                                       variance_of(learned_variance))
    return jnp.mean(bound) / (np.prod(x0.shape[1:]) * np.log(2.0)), (i, term)


def update_history(history: dict, aux, finite: jax.Array) -> dict:
    """The history after a step's (i, L_i) (vlb_loss's aux), unchanged when the step was skipped (not finite)."""
    new = vlb.update_history(vlb.LossHistory(**history), *aux)._asdict()
    return jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, history)


def hybrid_loss(rng: jax.Array, fn, x0: jax.Array, sde: sde_lib.VPSDE, lam: float = vlb.HYBRID_LAMBDA):
    """L_hybrid on the batch, t uniform, fn(x, t) -> (score, v)."""
    chain = vlb.DiscreteChain.from_sde(sde)
    rng_t, rng_z = jax.random.split(rng)
    i = jax.random.randint(rng_t, (x0.shape[0],), 0, sde.N)
    noise = jax.random.normal(rng_z, x0.shape, x0.dtype)
    xt = vlb.q_sample(chain, x0, i, noise)
    eps, v_raw = chain_eps_fn(sde, fn, True)(xt, i)
    return jnp.mean(vlb.hybrid_loss(chain, x0, xt, i, noise, eps, v_raw, lam))
