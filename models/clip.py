"""A CLIP-style contrastive pair: an image tower and a text tower projected into one embedding space.

    f = W_img ImageTower(x),   g = W_txt TextTower(w).pooler_output,   s = logit_scale (init log(1 / 0.07))

trained with losses.contrastive.contrastive_loss(f, g, s). The text tower is CLIP's transformer
(models.clip_text.CLIPTextTransformer) or, as the order-blind control, the bag-of-words mean of token
embeddings (BagOfWordsText); both share the embedding module. Names follow transformers' CLIPModel
('text_model', 'visual_projection', 'text_projection', 'logit_scale'), so a pretrained text tower's
'text_model.*' tensors load into params['text_model'] by models.convert.torch_to_flax. The image tower is a
small CNN for the small images trained here, not CLIP's ViT.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.clip_text import BagOfWordsText, CLIPTextConfig, CLIPTextTransformer

LOGIT_SCALE_INIT = math.log(1 / 0.07)  # CLIP's initial temperature 0.07
TEXT_TOWERS = {"transformer": CLIPTextTransformer, "bag_of_words": BagOfWordsText}


class ImageTower(nn.Module):
    """x (B, H, W, C) in the model's range -> (B, width): [3x3 conv, GroupNorm, SiLU, 2x2 mean pool] per
    entry of `features`, then the spatial mean and a Dense layer."""

    features: tuple[int, ...] = (32, 64, 128)
    width: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for k, f in enumerate(self.features):
            x = nn.Conv(f, (3, 3), name=f"conv_{k}")(x)
            x = nn.silu(nn.GroupNorm(num_groups=min(8, f), name=f"norm_{k}")(x))
            x = nn.avg_pool(x, (2, 2), (2, 2))
        return nn.Dense(self.width, name="head")(jnp.mean(x, axis=(1, 2)))


class CLIPPair(nn.Module):
    """(images, input_ids) -> (image embeddings f (B, E), text embeddings g (B, E), logit_scale s)."""

    text_config: CLIPTextConfig
    projection_dim: int = 64
    text_tower: str = "transformer"  # or 'bag_of_words'
    image_features: tuple[int, ...] = (32, 64, 128)

    def setup(self):
        if self.text_tower not in TEXT_TOWERS:
            raise ValueError(f"Unknown text_tower {self.text_tower!r}; choose one of {sorted(TEXT_TOWERS)}.")
        self.vision_model = ImageTower(self.image_features, self.image_features[-1])
        self.text_model = TEXT_TOWERS[self.text_tower](self.text_config)
        self.visual_projection = nn.Dense(self.projection_dim, use_bias=False)
        self.text_projection = nn.Dense(self.projection_dim, use_bias=False)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(LOGIT_SCALE_INIT), ())

    def encode_image(self, images: jax.Array) -> jax.Array:
        return self.visual_projection(self.vision_model(images))

    def encode_text(self, input_ids: jax.Array) -> jax.Array:
        return self.text_projection(self.text_model(input_ids).pooler_output)

    def __call__(self, images: jax.Array, input_ids: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        return self.encode_image(images), self.encode_text(input_ids), self.logit_scale
