"""Exact likelihood (bits/dim) through the probability-flow ODE (Song et al. 2021, Sec. 4.3, App. D.2).

Along the flow dx/dt = f~(x, t) = f(x, t) - 1/2 g(t)^2 s(x, t), the instantaneous change of
variables (Chen et al. 2018) gives

    log p_eps(x) = log p_T(x(T)) + int_eps^T div f~(x(t), t) dt,

integrated forward from x(eps) = x together with the running divergence. The divergence is
either exact (the Jacobian trace, D forward-mode products, for small D) or the unbiased
Hutchinson-Skilling estimate eps^T (df~/dx) eps with one probe eps ~ Rademacher or N(0, I)
per example, fixed along the trajectory (as FFJORD and score_sde).

Bits/dim of 8-bit data. The caller's x is on the model's scale, x = a u + b with
u = (pixel + U) / 256 in [0, 1)^D the uniformly dequantized image (U ~ U[0, 1)^D) and the
affine data scaler of datasets.py (a = 2 for centred data, else 1). Then
log p_u(u) = log p_x(x) + D log a and, since each pixel value is a bin of width 1/256 in u,
-log2 P(pixel) <= E_U[-log2 p_u(u)] + 8 D (Jensen). Hence, per example,

    bpd = -(log p_x(x) + D ln a) / (D ln 2) + 8,

the convention of score_sde / DDPM / VDM tables (score_sde writes the offset as
7 - inverse_scaler(-1)). D is the number of elements of one example.

Bits/dim of continuous data (quantized=False, e.g. a latent model's scaled latents z): -log2 p(z) / D, the
density's, with neither the offset nor the scale; a different quantity, not comparable with the one above.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from samplers.common import resolve_eps
from samplers.ode import flow_drift, get_solver, solve

HUTCHINSON_TYPES = ("rademacher", "gaussian", "exact")


def _probe(rng, x, hutchinson_type):
    if hutchinson_type == "gaussian":
        return jax.random.normal(rng, x.shape, x.dtype)
    return jax.random.rademacher(rng, x.shape, x.dtype)


def _per_example_sum(x):
    return jnp.sum(jnp.reshape(x, (x.shape[0], -1)), axis=-1)


def divergence(fn, x, probe=None):
    """div fn at x, per example (B,): exact trace over D basis directions, or eps^T J eps with probe eps.

    fn maps (B, ...) to (B, ...) example by example; the exact trace costs D Jacobian-vector products
    (batched with vmap), so use it for small D only.
    """
    if probe is not None:
        return _per_example_sum(probe * jax.jvp(fn, (x,), (probe,))[1])
    dim = int(np.prod(x.shape[1:]))

    def diagonal_entry(e):  # e_j^T J e_j for one basis vector e_j, for every example at once
        tangent = jnp.broadcast_to(jnp.reshape(e, x.shape[1:]), x.shape)
        return _per_example_sum(tangent * jax.jvp(fn, (x,), (tangent,))[1])

    return jnp.sum(jax.vmap(diagonal_entry)(jnp.eye(dim, dtype=x.dtype)), axis=0)


def get_likelihood_fn(sde, hutchinson_type: str = "rademacher", rtol: float = 1e-5, atol: float = 1e-5,
                      method: str = "dopri5", eps: float = 1e-5, inverse_scaler: Callable | None = None,
                      quantized: bool = True):
    """fn(rng, score_fn, x) -> (bpd (B,), z (B, ...), nfe): bits/dim of x (B, ...) on the model's scale.

    hutchinson_type: 'rademacher' | 'gaussian' (unbiased estimates) | 'exact' (Jacobian trace, small D).
    inverse_scaler: the data inverse scaler (model range -> [0, 1]; datasets.get_data_inverse_scaler(config));
    it must be affine, and gives a = dx/du above. None means x is already in [0, 1] (a = 1).
    quantized=False: x is continuous data, and the bits/dim are its density's (module docstring).
    rng draws the Hutchinson probes (unused for 'exact'). z = x(T) is the latent and nfe counts the
    evaluations of the augmented vector field (each one score evaluation with its Jacobian-vector
    product, or D of them for 'exact').
    """
    if hutchinson_type not in HUTCHINSON_TYPES:
        raise ValueError(f"Unknown hutchinson_type {hutchinson_type!r}; choose one of {HUTCHINSON_TYPES}.")
    get_solver(method)
    eps = resolve_eps(sde, eps)
    log_scale = _log_data_scale(inverse_scaler)

    def likelihood_fn(rng, score_fn, x):
        drift = flow_drift(sde, score_fn)
        probe = None if hutchinson_type == "exact" else _probe(rng, x, hutchinson_type)

        def augmented(t, state):
            x, _ = state
            return drift(t, x), divergence(lambda y: drift(t, y), x, probe)

        (z, delta_logp), nfe = solve(augmented, (x, jnp.zeros(x.shape[0], x.dtype)), eps, sde.T, rtol=rtol,
                                     atol=atol, method=method)
        dim = np.prod(x.shape[1:])
        log_px = sde.prior_logp(z) + delta_logp
        if not quantized:
            return -log_px / (dim * np.log(2.0)), z, nfe
        bpd = -(log_px + dim * log_scale) / (dim * np.log(2.0)) + 8.0
        return bpd, z, nfe

    return likelihood_fn


def _log_data_scale(inverse_scaler) -> float:
    """ln a for the affine scaler x = a u + b whose inverse is given (None: identity, a = 1)."""
    if inverse_scaler is None:
        return 0.0
    u0, u_half, u1 = (float(inverse_scaler(np.float32(v))) for v in (0.0, 0.5, 1.0))
    if not (u1 > u0 and abs(u_half - 0.5 * (u0 + u1)) < 1e-6 * (u1 - u0)):
        raise ValueError("inverse_scaler must be an increasing affine map (model range -> [0, 1]) for bits/dim.")
    return float(-np.log(u1 - u0))

