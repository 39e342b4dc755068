"""The VQ-regularised autoencoder (VQ-GAN of Esser et al. 2021, LDM's VQModel), laid out like diffusers' VQModel:
the encoder/decoder of models.autoencoder around a vector quantiser.

    x --encoder--> (B, h, w, c) --quant_conv--> z_e (B, h, w, D) --quantize--> z_q
      --post_quant_conv--> --decoder--> x_hat

Quantisation (van den Oord et al. 2017), with codebook e_1..e_K in R^D and sg the stop-gradient:

    k(i)   = argmin_k ||z_e,i - e_k||^2               (per spatial position i)
    z_q,i  = e_k(i)
    L_VQ   = mean ||sg[z_e] - z_q||^2  +  beta * mean ||z_e - sg[z_q]||^2
             (codebook loss, moves the codes)       (commitment loss, moves the encoder)

the means taken over all B h w D elements. The decoder sees z_q in the forward pass and passes its gradient
straight through to z_e (d z_q / d z_e := I). Note: taming-transformers' original quantiser (and diffusers'
`legacy=True` default) puts beta on the codebook term instead; this module uses the paper's form.
"""
from __future__ import annotations

import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.autoencoder import Decoder, Encoder, check_block_types, params_from_tensors
from models.convert import ConversionError, read_diffusers_folder


def codebook_usage(indices, num_embeddings: int):
    """(perplexity, fraction used) of the codes picked in a batch: with p_k the fraction of positions assigned to
    code k, perplexity = exp(-sum_k p_k log p_k) (K when all codes are used equally, 1 when one code is used),
    fraction used = #{k : p_k > 0} / K."""
    p = jnp.bincount(indices.reshape(-1), length=num_embeddings) / indices.size
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return jnp.exp(entropy), jnp.mean(p > 0)


def codebook_from_data(z_e, num_embeddings: int, rng):
    """K codebook rows drawn from encoder outputs z_e (..., D), e_k = z_e,i(k) for K positions i(k) picked at random
    (without replacement when there are at least K). Every code then starts where the data is: from taming's
    U(-1/K, 1/K) start the codes sit near 0, far from the encoder's O(1) outputs, so only the nearest few are ever
    chosen and the others never move (a collapsed codebook)."""
    flat = jnp.reshape(z_e, (-1, z_e.shape[-1]))
    rows = jax.random.choice(rng, flat.shape[0], (num_embeddings,), replace=flat.shape[0] < num_embeddings)
    return flat[rows]


class VectorQuantizer(nn.Module):
    """z_e (..., D) -> (z_q, L_VQ, stats) as in the module docstring; stats = {'indices', 'perplexity', 'usage'}.

    The returned z_q equals the codebook rows exactly in the forward pass: it is computed as
    z_q + (z_e - sg[z_e]), whose added term is exactly zero but whose gradient w.r.t. z_e is the identity.
    """
    num_embeddings: int
    embedding_dim: int
    beta: float = 0.25

    def setup(self):
        k = self.num_embeddings
        self.embedding = nn.Embed(k, self.embedding_dim,  # taming's U(-1/K, 1/K) initialisation
                                  embedding_init=lambda *a: nn.initializers.uniform(2.0 / k)(*a) - 1.0 / k)

    def lookup(self, indices):
        """Code indices (...) -> their codebook rows (..., D)."""
        return self.embedding(indices)

    def __call__(self, z_e):
        e = self.embedding.embedding
        flat = z_e.reshape(-1, self.embedding_dim)
        distances = (jnp.sum(flat ** 2, axis=1, keepdims=True) - 2.0 * flat @ e.T + jnp.sum(e ** 2, axis=1))
        indices = jnp.argmin(distances, axis=1).reshape(z_e.shape[:-1])
        z_q = self.lookup(indices)
        codebook_loss = jnp.mean((jax.lax.stop_gradient(z_e) - z_q) ** 2)
        commitment_loss = jnp.mean((z_e - jax.lax.stop_gradient(z_q)) ** 2)
        loss = codebook_loss + self.beta * commitment_loss
        perplexity, usage = codebook_usage(indices, self.num_embeddings)
        z_q = z_q + (z_e - jax.lax.stop_gradient(z_e))
        return z_q, loss, {"indices": indices, "perplexity": perplexity, "usage": usage}


class VQModel(nn.Module):
    """The VQ autoencoder; field names and defaults are diffusers' VQModel config keys (norm_type 'group').

    `encode(x) -> z_e` (before quantisation), `vector_quantize(z_e) -> (z_q, L_VQ, stats)`, `decode(z_q) -> x_hat`,
    `decode_indices(indices) -> x_hat`, and `__call__(x) -> (x_hat, L_VQ, stats)` for training. decode does
    not quantise: a latent-diffusion sample z is decoded as decode(vector_quantize(z)[0]), as LDM does.
    """
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 3
    block_out_channels: Sequence[int] = (64,)
    layers_per_block: int = 1
    norm_num_groups: int = 32
    num_vq_embeddings: int = 256
    vq_embed_dim: int | None = None
    mid_block_add_attention: bool = True
    beta: float = 0.25

    @property
    def embed_dim(self) -> int:
        return self.vq_embed_dim or self.latent_channels

    def setup(self):
        shared = dict(block_out_channels=tuple(self.block_out_channels), layers_per_block=self.layers_per_block,
                      groups=self.norm_num_groups, mid_block_attention=self.mid_block_add_attention)
        self.encoder = Encoder(self.latent_channels, **shared)
        self.decoder = Decoder(self.out_channels, **shared)
        self.quant_conv = nn.Conv(self.embed_dim, (1, 1), name="quant_conv")
        self.quantize = VectorQuantizer(self.num_vq_embeddings, self.embed_dim, self.beta)
        self.post_quant_conv = nn.Conv(self.latent_channels, (1, 1), name="post_quant_conv")

    def encode(self, x):
        """x (B, H, W, in_channels) in [-1, 1] -> z_e (B, h, w, embed_dim)."""
        return self.quant_conv(self.encoder(x))

    def vector_quantize(self, z_e):
        """z_e -> (z_q, L_VQ, stats) (the submodule keeps diffusers' attribute name `quantize`)."""
        return self.quantize(z_e)

    def decode(self, z_q):
        return self.decoder(self.post_quant_conv(z_q))

    def decode_indices(self, indices):
        """Code indices (B, h, w) -> x_hat, through the codebook rows they name."""
        return self.decode(self.quantize.lookup(indices))

    def __call__(self, x):
        z_q, loss, stats = self.quantize(self.encode(x))
        return self.decode(z_q), loss, stats


def load_diffusers_vq_model(folder: str, beta: float = 0.25):
    """Reads a diffusers VQModel folder -> (VQModel, params, scaling_factor). beta (not saved in the folder)
    weighs the commitment loss when training further."""
    config, tensors = read_diffusers_folder(folder, "VQModel")
    path = os.path.join(folder, "config.json")
    check_block_types(config, path)
    if config.get("norm_type", "group") != "group":
        raise ConversionError(f"{path}: norm_type {config['norm_type']!r} is not supported (only 'group').")
    module = VQModel(
        in_channels=config.get("in_channels", 3), out_channels=config.get("out_channels", 3),
        latent_channels=config.get("latent_channels", 3),
        block_out_channels=tuple(config.get("block_out_channels", (64,))),
        layers_per_block=config.get("layers_per_block", 1), norm_num_groups=config.get("norm_num_groups", 32),
        num_vq_embeddings=config.get("num_vq_embeddings", 256), vq_embed_dim=config.get("vq_embed_dim"),
        mid_block_add_attention=config.get("mid_block_add_attention", True), beta=beta)
    size = 2 ** (len(module.block_out_channels) - 1)
    params = params_from_tensors(module, tensors, os.path.join(folder, "diffusion_pytorch_model.safetensors"),
                                 (1, size, size, module.in_channels))
    return module, params, float(config.get("scaling_factor", 0.18215))
