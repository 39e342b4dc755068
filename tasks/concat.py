"""Latent diffusion's 'concat' conditioning (Rombach et al. 2022, sec. 4.4-4.5: super-resolution, inpainting,
semantic synthesis) for the score task: a condition image c made from each example x_0 on the fly enters the
denoiser beside x_t on the channel axis (models.layers.concat_input),

    s(x_t, t | c) = s_theta([x_t, R(c)], t),    c = condition(x_0) in [0, 1]^(H, W, C_c)

(data_sources.conditions.compute_concat: config.concat.kind 'lowres' | 'inpaint' | 'foreground'), R the area
mean down to the denoiser's resolution (the identity in pixel space; a latent model's h x w otherwise). In
training a fraction config.concat.dropout of the conditions is replaced by the null image 0, so that one network
also learns s(x_t, t | null) and classifier-free guidance applies to c. With class labels or prompts y as well
(config.model.num_classes, config.text.conditional) each is dropped independently (training.label_dropout,
concat.dropout), so the network learns every pairing with the nulls, and guidance drops both:

    s_w(x_t, t | y, c) = (1 + w) s(x_t, t | y, c) - w s(x_t, t | null, null).

Snapshots and --mode sample show each condition beside its samples and the image it was made from.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from data_sources import conditions
from training.validation import ConfigError


def enabled(config) -> bool:
    return bool(config.concat.kind)


def validate(config) -> None:
    """ConfigError in one line for a concat section this framework cannot train or sample."""
    c, d = config.concat, config.data
    if c.kind not in conditions.CONCAT_KINDS:
        raise ConfigError(f"config.concat.kind={c.kind!r} must be '' (off) or one of {list(conditions.CONCAT_KINDS)}.")
    if c.kind == "lowres" and (c.factor < 1 or d.image_size % c.factor):
        raise ConfigError(f"config.concat.factor={c.factor} must divide config.data.image_size={d.image_size} (the "
                          f"low-resolution copy is image_size / factor pixels on a side).")
    if c.upsample not in conditions.UPSAMPLING:
        raise ConfigError(f"config.concat.upsample={c.upsample!r} must be one of {list(conditions.UPSAMPLING)}.")
    if not 0.0 <= c.dropout < 1.0:
        raise ConfigError(f"config.concat.dropout={c.dropout} must lie in [0, 1): the rate of null conditions.")


def channels(config) -> int:
    """C_c: config.concat.channels, or the kind's for config.data's channels."""
    return config.concat.channels or conditions.concat_channels(config.concat.kind, config.data.num_channels)


def init_inputs(config) -> dict:
    """The network's further init inputs: a zero condition (1, H, W, C_c) at the denoiser's resolution, or none."""
    if not enabled(config):
        return {}
    size = config.data.image_size
    return {"concat": jnp.zeros((1, size, size, channels(config)), jnp.float32)}


def condition_fn(config):
    """fn(images in [0, 1] (N, H, W, C), their dataset indices) -> conditions (N, H, W, C_c) in [0, 1]."""
    c = config.concat
    return functools.partial(conditions.compute_concat, c.kind, seed=config.seed, factor=c.factor,
                             upsample=c.upsample, threshold=c.threshold)


def to_denoiser(condition, net_config):
    """R(c): the area mean of the condition down to the network's resolution (net_config.data.image_size)."""
    size = net_config.data.image_size
    if condition.shape[1] == size:
        return jnp.asarray(condition)
    return conditions.area_downsample(jnp.asarray(condition), condition.shape[1] // size)


def network_inputs(net_config):
    """The score step's `conditions` hook: (batch, frozen) -> {'concat': R(batch['condition'])}."""
    return lambda batch, frozen: {"concat": to_denoiser(batch["condition"], net_config)}


def check_condition(config, condition) -> None:
    """ConfigError in one line unless condition is (N, H, W, C_c) of config.data's size and the kind's channels."""
    size, want = config.data.image_size, channels(config)
    shape = tuple(np.shape(condition))
    if len(shape) != 4 or shape[1:] != (size, size, want):
        raise ConfigError(f"A concat condition of shape {shape} was given; config.concat.kind={config.concat.kind!r} "
                          f"on {size}x{size} data takes (N, {size}, {size}, {want}).")


def complete(condition, samples):
    """An inpaint condition's completed images x (1 - m) + m s: the known pixels of x, the samples s in the region
    m to fill."""
    c = np.asarray(condition, np.float32)
    return c[..., :-1] + c[..., -1:] * np.asarray(samples, np.float32)


def shown(config, condition: np.ndarray) -> np.ndarray:
    """Conditions as images of the data's channels: the low-resolution copy; the masked image with its unknown
    pixels mid-gray; the foreground map in every channel."""
    c = np.asarray(condition, np.float32)
    channels_out = config.data.num_channels
    if config.concat.kind == "inpaint":
        m = c[..., -1:]
        return c[..., :-1] * (1 - m) + 0.5 * m
    return np.broadcast_to(c, c.shape[:-1] + (channels_out,)) if c.shape[-1] == 1 else c
