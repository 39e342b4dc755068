"""The autoencoder's training losses (LDM's LPIPSWithDiscriminator, Rombach et al. 2022; VQGAN, Esser et al. 2021),
as pure functions. With x the images, x_hat the reconstructions, q(z|x) = N(mu, diag(sigma^2)) the posterior and
D the discriminator, the autoencoder minimises

    L_AE = L_rec(x, x_hat) + kl_weight * KL(q || N(0, I)) + lambda * adopt(step) * L_G(D(x_hat))

and the discriminator, in its own step, adopt(step) * L_D(D(x), D(x_hat)). A perceptual distance (evaluation.lpips)
enters L_rec as a term the caller adds; the VQ model's L_VQ replaces the KL term. Sums over pixels and
latents are taken per example and averaged over the batch, as LDM does, so that kl_weight (1e-6 in SD's
autoencoder config) has LDM's meaning.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import traverse_util

DECODER_LAST_LAYER = ("decoder", "conv_out", "kernel")  # where LDM measures the adaptive weight's gradients


def _per_example_sum_mean(values):
    """(1/B) sum_b sum_{rest} values[b, ...]."""
    return jnp.sum(values) / values.shape[0]


def l1_reconstruction(x, x_hat):
    """L_rec = (1/B) sum_b sum_{h,w,c} |x - x_hat|."""
    return _per_example_sum_mean(jnp.abs(x - x_hat))


def kl_to_standard_normal(mean, logvar):
    """KL(N(mu, diag(sigma^2)) || N(0, I)) = (1/B) sum_b (1/2) sum_i (mu_i^2 + sigma_i^2 - 1 - log sigma_i^2),
    with logvar = log sigma^2."""
    return _per_example_sum_mean(0.5 * (mean ** 2 + jnp.exp(logvar) - 1.0 - logvar))


def hinge_discriminator_loss(logits_real, logits_fake):
    """L_D = (1/2) (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))), means over batch and patches."""
    return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake)))


def generator_loss(logits_fake):
    """L_G = -mean D(x_hat): the autoencoder raises the discriminator's logits on its reconstructions."""
    return -jnp.mean(logits_fake)


def adaptive_weight(rec_grad, gen_grad, disc_weight: float = 1.0, max_weight: float = 1e4):
    """lambda = disc_weight * clip(||grad_w L_rec|| / (||grad_w L_G|| + 1e-4), 0, max_weight) (Esser et al. eq. 7),
    with w the decoder's last layer (DECODER_LAST_LAYER), so the GAN term's gradient there is as large as the
    reconstruction term's. A constant for differentiation (stop_gradient), as in the reference."""
    ratio = jnp.linalg.norm(jnp.ravel(rec_grad)) / (jnp.linalg.norm(jnp.ravel(gen_grad)) + 1e-4)
    return jax.lax.stop_gradient(disc_weight * jnp.clip(ratio, 0.0, max_weight))


def leaf_vjp(fn, params, path: tuple = DECODER_LAST_LAYER):
    """(out, vjp, aux) for fn(params) -> (out, aux): vjp(c) = d <out, c> / d params[path], the other parameters
    held fixed. One forward pass serves the loss and every gradient w.r.t. that leaf (the adaptive weight needs
    two); out and aux stay differentiable in all of params for an enclosing jax.grad."""
    flat = traverse_util.flatten_dict(params)
    out, vjp, aux = jax.vjp(lambda leaf: fn(traverse_util.unflatten_dict({**flat, path: leaf})), flat[path],
                            has_aux=True)
    return out, lambda cotangent: vjp(cotangent)[0], aux


def grad_wrt_leaf(loss_fn, params, path: tuple = DECODER_LAST_LAYER):
    """d loss_fn(params) / d params[path], the other parameters held fixed: what adaptive_weight takes."""
    loss, vjp, _ = leaf_vjp(lambda p: (loss_fn(p), None), params, path)
    return vjp(jnp.ones_like(loss))


def adopt_weight(weight, step, disc_start: int):
    """The GAN terms' factor: 0 before step disc_start, `weight` from then on (LDM's adopt_weight)."""
    return jnp.where(step >= disc_start, weight, 0.0)
