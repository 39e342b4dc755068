"""Name -> sampler-builder registry.

A builder is called as builder(sde, shape, **options) and returns a pure,
jit-able sampler(rng, score_fn) -> (x, nfe): x has `shape` and lies in the
model's data space (apply the data inverse scaler to view it), nfe is the
number of score evaluations per sample.
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


def get_sampler(name: str, sde, shape, **options):
    """Build the sampler `name` for samples of `shape`; unknown names and options are errors."""
    if name not in _SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {sorted(_SAMPLERS)}.")
    builder = _SAMPLERS[name]
    accepted = set(inspect.signature(builder).parameters) - {"sde", "shape"}
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(f"Sampler {name!r} takes no option(s) {sorted(unknown)}; it takes {sorted(accepted)}.")
    return builder(sde, tuple(shape), **options)
