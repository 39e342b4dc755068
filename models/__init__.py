"""Score networks: `get_model(config)`, `init_model(rng, config)` and `get_score_fn(sde, model, variables, ...)`."""
from models import ddpm, ncsnpp, ncsnv2, unet2d_condition  # noqa: F401  (register the networks by name)
from models.registry import get_model, register_model
from models.score_fn import (check_learned_variance, get_score_fn, get_variance_fn, has_learned_variance, init_model,
                             noise_conditioning)

__all__ = ["get_model", "register_model", "get_score_fn", "get_variance_fn", "has_learned_variance",
           "check_learned_variance", "init_model", "noise_conditioning"]
