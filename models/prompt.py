"""A prompt as the condition of a score network: token ids w (B, L) -> context c = T(w).last_hidden_state
(B, L, D), which the network (Stable Diffusion's U-Net, 'unet2d_condition') attends to by cross-attention.

The parameters of a text-conditioned score model are {'unet': the network's, 'text_model': the tower's} when
the text tower T is trained jointly, and {'unet': ...} alone when T is frozen (e.g. a CLIP run's text tower):
its params then come beside them, {'text_model': ...}, outside the optimizer. `split` reads either layout
from the union of the two. A ControlNet on a text-conditioned base keeps its params as {'controlnet': ...}
beside the base's frozen tower in the same way (network='controlnet'). The empty prompt [bos, eos, pad...]
is the unconditional branch of classifier-free guidance, s_w(x, t | w) = (1 + w') s(x, t | w) - w' s(x, t | empty),
learned by caption dropout.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class PromptConditioning:
    """The text tower `encoder` (a models.clip.TEXT_TOWERS module), the empty prompt's ids (L,), whether
    the tower is trained with the network (joint) or frozen, and the key of the network's params."""

    encoder: nn.Module
    empty_tokens: np.ndarray
    joint: bool = True
    network: str = "unet"

    def init(self, rng: jax.Array, network_variables: dict) -> dict:
        """Variables {'params': {network: ..., ['text_model': T's initial params when joint]}, ...}."""
        variables = dict(network_variables)
        params = {self.network: variables.pop("params")}
        if self.joint:
            params["text_model"] = self.encoder.init(rng, self.empty_tokens[None])["params"]
        return {"params": params, **variables}

    def split(self, params: dict, tokens: jax.Array) -> tuple[dict, jax.Array]:
        """(the network's params, the context c (B, L, D) of `tokens`) from params holding the network's and
        'text_model' (the frozen tower's merged in)."""
        context = self.encoder.apply({"params": params["text_model"]}, tokens).last_hidden_state
        return params[self.network], context

    @staticmethod
    def variables(variables: dict, frozen: dict | None) -> dict:
        """A train state's (EMA) variables with the frozen tower's params merged in, as make_sample_fn takes."""
        return {**variables, "params": {**variables["params"], **(frozen or {})}}
