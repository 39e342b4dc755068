"""Name -> score-network class registry: a new model is one file plus `@register_model("name")`."""
from __future__ import annotations

import flax.linen as nn

_MODELS: dict[str, type[nn.Module]] = {}


def register_model(name: str):
    """Class decorator adding a flax Module (constructed as cls(config=config)) under `name`."""

    def register(cls):
        if name in _MODELS:
            raise ValueError(f"Model name {name!r} is already registered to {_MODELS[name].__name__}.")
        _MODELS[name] = cls
        return cls

    return register


def get_model(config) -> nn.Module:
    """The (unbound) score network named by config.model.name."""
    name = config.model.name
    if name not in _MODELS:
        raise ValueError(f"Unknown model {name!r} in config.model.name; choose one of {sorted(_MODELS)}.")
    return _MODELS[name](config=config)
