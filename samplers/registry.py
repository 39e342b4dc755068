"""Name -> sampler-builder registry.

A builder is called as builder(sde, shape, **options) and returns a pure,
jit-able sampler(rng, score_fn) -> (x, nfe): x has `shape` and lies in the
model's data space (apply the data inverse scaler to view it), nfe is the
number of score evaluations per sample. Samplers that draw a variance
('pc' with its ancestral predictor, 'ddim' with eta > 0) also take an optional
variance_fn(x, t) -> v of a learned-variance VP model (models.get_variance_fn):
sampler(rng, score_fn, variance_fn=None); `takes_variance` says which.

Conventions the builders share (samplers/common.py): `num_steps` and `eps`
default to sde.N and sde.sampling_eps when None or 0 (the config's 0);
x_T is drawn with `draw_prior`, so samplers given the same rng start from the
same x_T; `denoise` returns the noise-free final estimate (the Tweedie
denoiser at eps, one more score evaluation; for 'pc' the last predictor mean).
"""
from __future__ import annotations

import inspect

_SAMPLERS: dict = {}


def register_sampler(name: str):
    def register(builder):
        if name in _SAMPLERS:
            raise ValueError(f"Sampler name {name!r} is already registered.")
        _SAMPLERS[name] = builder
        return builder

    return register


def sampler_options(name: str) -> list[str]:
    """The options the builder of sampler `name` takes (its keyword parameters)."""
    if name not in _SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {sorted(_SAMPLERS)}.")
    return [p for p in inspect.signature(_SAMPLERS[name]).parameters if p not in ("sde", "shape")]


def takes_variance(sampler) -> bool:
    """Whether a built sampler takes a variance_fn beside its score_fn."""
    return "variance_fn" in inspect.signature(sampler).parameters


def get_sampler(name: str, sde, shape, **options):
    """Build the sampler `name` for samples of `shape`; unknown names and options are errors."""
    accepted = set(sampler_options(name))
    builder = _SAMPLERS[name]
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(f"Sampler {name!r} takes no option(s) {sorted(unknown)}; it takes {sorted(accepted)}.")
    return builder(sde, tuple(shape), **options)
