"""The probability-flow ODE (Song et al. 2021, eq. 13), solved adaptively with diffrax:

    dx/dt = f(x, t) - 1/2 g(t)^2 s(x, t).

Its flow map is invertible, so `decode` (T -> eps, from a prior sample) samples and
`encode` (eps -> T) maps data to its latent. `solve` is the one adaptive solve that
they and the likelihood (samplers/likelihood.py) share; it counts score
evaluations exactly: the explicit Runge-Kutta methods here are FSAL ("first same as
last"), so a solve of n attempted steps (accepted and rejected) with an s-stage
method costs (s - 1) n + 1 evaluations (tests/test_samplers_ode.py checks this
against a counter).
"""
from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp

from samplers.common import draw_prior, final_denoise, resolve_eps
from samplers.registry import register_sampler

METHODS = {"dopri5": diffrax.Dopri5, "tsit5": diffrax.Tsit5, "bosh3": diffrax.Bosh3}


def get_solver(method: str):
    """The diffrax solver named `method` (a key of METHODS)."""
    if method not in METHODS:
        raise ValueError(f"Unknown ODE method {method!r}; choose one of {sorted(METHODS)}.")
    return METHODS[method]()


def solve(vector_field, y0, t0: float, t1: float, *, rtol: float = 1e-5, atol: float = 1e-5,
          method: str = "dopri5", max_steps: int = 4096):
    """(y(t1), nfe): y' = vector_field(t, y) (t a scalar, y any pytree) from y(t0) = y0, adaptive PID steps.

    rtol / atol bound the local error in the RMS norm over all of y (the batch is one system, as in
    score_sde); more than max_steps steps is an error.
    """
    solver = get_solver(method)
    tableau = solver.tableau
    if not tableau.fsal:
        raise ValueError(f"ODE method {method!r} is not FSAL; its evaluation count is not (s - 1) n + 1.")
    sol = diffrax.diffeqsolve(diffrax.ODETerm(lambda t, y, args: vector_field(t, y)), solver, t0, t1, None, y0,
                              stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps)
    nfe = len(tableau.c) * sol.stats["num_steps"] + 1  # len(c) = stages - 1
    return jax.tree.map(lambda y: y[-1], sol.ys), nfe


def flow_drift(sde, score_fn):
    """The probability-flow vector field (t scalar, x (B, ...)) -> f(x, t) - 1/2 g(t)^2 s(x, t)."""
    rsde = sde.reverse(score_fn, probability_flow=True)
    return lambda t, x: rsde.sde(x, jnp.full((x.shape[0],), t))[0]


def encode(sde, score_fn, x, *, eps=None, rtol=1e-5, atol=1e-5, method="dopri5"):
    """(z, nfe): the latent z = x(T) of data x = x(eps), integrating the probability-flow ODE forward."""
    eps = resolve_eps(sde, eps)
    return solve(flow_drift(sde, score_fn), x, eps, sde.T, rtol=rtol, atol=atol, method=method)


def decode(sde, score_fn, z, *, eps=None, rtol=1e-5, atol=1e-5, method="dopri5"):
    """(x, nfe): x(eps) from the latent z = x(T), integrating the probability-flow ODE backward; inverts encode."""
    eps = resolve_eps(sde, eps)
    return solve(flow_drift(sde, score_fn), z, sde.T, eps, rtol=rtol, atol=atol, method=method)


@register_sampler("ode")
def get_ode_sampler(sde, shape, rtol=1e-5, atol=1e-5, method="dopri5", eps=None, denoise=True):
    """sampler(rng, score_fn) -> (x, nfe): decode a prior sample; nfe is an int array (adaptive), +1 to denoise."""
    get_solver(method)
    eps = resolve_eps(sde, eps)

    def sampler(rng, score_fn):
        x, nfe = decode(sde, score_fn, draw_prior(sde, rng, shape)[0], eps=eps, rtol=rtol, atol=atol, method=method)
        x, extra = final_denoise(sde, score_fn, x, eps, denoise)
        return x, nfe + extra

    return sampler
