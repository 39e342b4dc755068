"""The train state: one pytree, saved and restored whole."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
    """step, params, EMA params, optimizer state, non-parameter model variables and the rng."""

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any
    model_state: Any
    rng: jax.Array

    @property
    def variables(self):
        return {"params": self.params, **self.model_state}

    @property
    def ema_variables(self):
        return {"params": self.ema_params, **self.model_state}


def create_train_state(rng: jax.Array, variables, optimizer) -> TrainState:
    """Fresh state at step 0 with EMA = params and the rng used for all later randomness."""
    variables = dict(variables)
    params = variables.pop("params")
    ema_params = jax.tree_util.tree_map(jnp.copy, params)  # own buffers: the train step donates both
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=ema_params,
                      opt_state=optimizer.init(params), model_state=variables, rng=rng)
