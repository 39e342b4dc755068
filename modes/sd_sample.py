"""`--mode sample` for a published Stable Diffusion (/ ControlNet) pipeline folder (configs/sd/pipeline.py):

    python main.py --config configs/sd/pipeline.py --mode sample --workdir W --config.sd.path=FOLDER \\
        --config.sd.prompt="a photo of a cat" [--config.sd.controlnet=CN --config.sd.control_image=edges.png]

prompt -> CLIP tokens -> text encoder (last_hidden_state c) -> the framework's DDIM on the scheduler's discrete
VP chain (samplers/ddim.py, discrete=True) with the U-Net (+ ControlNet) score and classifier-free guidance

    s_w(z, t) = (1 + w) s(z, t | c) - w s(z, t | c_neg),   w = guidance_scale - 1

(diffusers' eps_neg + g (eps - eps_neg); samplers.guidance, the negative prompt as the null label) -> latents z
-> x = VAE.decode(z / scaling_factor) -> images (x + 1) / 2, written to W/<eval_folder>/sd_<name>.{npz,png}.
The DDIM steps are those of the scheduler config's timestep_spacing ('leading', 'trailing' or 'linspace') and
steps_offset, as diffusers' DDIMScheduler takes them; another spacing is refused in one line.

An inpainting U-Net (in_channels 2 C + 1: SD's inpainting checkpoints) fills the white region m of
config.sd.mask_image in config.sd.image: every step it takes [z_t, m_z, s E(x (1 - m))] (masked_latents), in
both guidance branches, from pure noise (diffusers' strength 1), E the VAE encoder's mean (diffusers draws a
sample of that posterior instead; the mean is its deterministic centre).
"""
from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import datasets
import models
from data_sources.local import decode_image
from data_sources.preprocess import ImageFormat
from data_sources.tokenizer import load_tokenizer
from models import stable_diffusion
from models.autoencoder import AutoencoderKL
from models.layers import DTYPES
from samplers import get_sampler
from samplers.guidance import classifier_free_guidance
from training.validation import ConfigError
from training.writers import save_labelled_grid


def text_contexts(pipeline: stable_diffusion.Pipeline, prompts: list[str]) -> jax.Array:
    """The text encoder's last_hidden_state (len(prompts), L, D) of the prompts, tokenized by the pipeline's
    CLIP tokenizer to the encoder's max_position_embeddings."""
    text = pipeline.text_encoder.config
    tokenizer = load_tokenizer(pipeline.tokenizer_folder, context_length=text.max_position_embeddings)
    if max(tokenizer.vocab.values()) >= text.vocab_size:
        raise ConfigError(f"The tokenizer {pipeline.tokenizer_folder} has ids up to {max(tokenizer.vocab.values())}, "
                          f"beyond the text encoder's vocab_size {text.vocab_size}; they belong to other models.")
    ids = jnp.asarray(tokenizer(prompts))
    return pipeline.text_encoder.apply({"params": pipeline.text_params}, ids).last_hidden_state


def latent_shape(pipeline: stable_diffusion.Pipeline, image_size: int, num_samples: int) -> tuple:
    """(num_samples, h, h, C) latents for image_size pixels (0: the U-Net's sample_size times the VAE's factor)."""
    f = pipeline.vae_factor
    h = image_size // f if image_size else pipeline.latent_size
    multiple = f * 2 ** (len(pipeline.model.unet.block_out_channels) - 1)
    if image_size % multiple:
        raise ConfigError(f"config.sd.image_size={image_size} must be a multiple of {multiple} (the VAE's factor {f} "
                          f"times the U-Net's downsampling).")
    return (num_samples, h, h, pipeline.vae.latent_channels)


def control_image(pipeline: stable_diffusion.Pipeline, path: str, latent_size: int):
    """The control image (1, f h, f h, C_c) in [0, 1] for a ControlNet pipeline (f its hint factor), else None."""
    control = pipeline.model.control
    if (control is None) != (not path):
        raise ConfigError("config.sd.control_image is set but the pipeline has no ControlNet (config.sd.controlnet)"
                          if control is None else
                          "The pipeline has a ControlNet: give its condition image with config.sd.control_image.")
    if control is None:
        return None
    if not os.path.isfile(path):
        raise ConfigError(f"config.sd.control_image={path!r} is not a file.")
    size = latent_size * pipeline.control_factor
    return decode_image(path, ImageFormat(size, control.conditioning_channels))[None] / np.float32(255)


def latent_mask(mask, factor: int):
    """m_z (B, h, w, 1) in {0, 1} of a pixel mask (B, f h, f w, 1) in [0, 1], 1 = the region to fill: the mask
    binarised at 1/2, then taken at the first pixel of each f x f block (diffusers' mask processor and its
    nearest interpolate to the latent size)."""
    return (jnp.asarray(mask) >= 0.5).astype(jnp.float32)[:, ::factor, ::factor]


def masked_latents(pipeline: stable_diffusion.Pipeline, image, mask):
    """[m_z, s E(x (1 - m))] (B, h, w, 1 + C), the inpainting U-Net's further inputs, in diffusers' order: image
    in [0, 1] mapped to x in [-1, 1], m the binarised pixel mask, E the VAE encoder's mean, s the scaling factor."""
    m = (jnp.asarray(mask) >= 0.5).astype(jnp.float32)
    x = (2.0 * jnp.asarray(image, jnp.float32) - 1.0) * (1.0 - m)
    mean, _ = pipeline.vae.apply({"params": pipeline.vae_params}, x, method=AutoencoderKL.encode)
    return jnp.concatenate([latent_mask(mask, pipeline.vae_factor), pipeline.scaling_factor * mean], axis=-1)


def inpaint_inputs(pipeline: stable_diffusion.Pipeline, image_path: str, mask_path: str, latent_size: int):
    """An inpainting pipeline's masked_latents (1, h, w, 1 + C) of config.sd.image and config.sd.mask_image (white
    = to fill), resized to latent_size times the VAE's factor; None for a text-to-image pipeline."""
    if pipeline.inpainting != bool(image_path or mask_path):
        raise ConfigError(f"config.sd.image / mask_image are set but the U-Net takes {pipeline.model.unet.in_channels} "
                          f"input channels, not an inpainting U-Net's {2 * pipeline.vae.latent_channels + 1}."
                          if not pipeline.inpainting else
                          "The pipeline's U-Net inpaints: give config.sd.image and config.sd.mask_image "
                          "(white = fill).")
    if not pipeline.inpainting:
        return None
    for what, path in (("image", image_path), ("mask_image", mask_path)):
        if not os.path.isfile(path):
            raise ConfigError(f"config.sd.{what}={path!r} is not a file.")
    size = latent_size * pipeline.vae_factor
    image = decode_image(image_path, ImageFormat(size, 3))[None] / np.float32(255)
    mask = decode_image(mask_path, ImageFormat(size, 1))[None] / np.float32(255)
    filled = float(np.mean(mask >= 0.5))
    if filled in (0.0, 1.0):
        raise ConfigError(f"config.sd.mask_image={mask_path!r} marks {'no' if filled == 0 else 'every'} pixel to fill "
                          f"(white = fill, black = keep); give a mask with both.")
    return masked_latents(pipeline, image, mask)


def make_pipeline_sampler(pipeline: stable_diffusion.Pipeline, shape: tuple, sd):
    """jit(rng, contexts (2, L, D): [prompt, negative prompt], control (1, H, W, C_c) or None, concat
    (1, h, w, C_c) or None: an inpainting U-Net's masked_latents) -> images in [0, 1], with the options of
    config.sd (guidance_scale, num_steps, eta, conditioning_scale). Both guidance branches see the same control
    image and concat channels, as in diffusers."""
    scheduler = pipeline.scheduler
    sampler = get_sampler("ddim", scheduler.sde, shape, eta=sd.eta, num_steps=sd.num_steps, discrete=True,
                          steps_offset=scheduler.steps_offset, spacing=scheduler.spacing,
                          denoise=scheduler.set_alpha_to_one)
    w = float(sd.guidance_scale) - 1.0

    @jax.jit
    def sample(rng, contexts, control, concat=None):
        def score_fn_for_labels(y):  # label 0: the prompt, 1: the negative prompt
            image, channels = (None if c is None else jnp.broadcast_to(c, (len(y),) + c.shape[1:])
                               for c in (control, concat))
            return models.get_score_fn(scheduler.sde, pipeline.model, pipeline.variables, continuous=False,
                                       context=contexts[y], control_image=image,
                                       conditioning_scale=sd.conditioning_scale, concat=channels)

        score_fn = classifier_free_guidance(score_fn_for_labels, jnp.zeros((shape[0],), jnp.int32), 1, w)
        latents, _ = sampler(rng, score_fn)
        x = pipeline.vae.apply({"params": pipeline.vae_params}, latents / pipeline.scaling_factor,
                               method=AutoencoderKL.decode)
        return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)

    return sample


def sample_pipeline(config, workdir: str, eval_folder: str) -> str:
    """Run `--mode sample` on config.sd's pipeline; returns the path of the .npz written."""
    sd = config.sd
    if not sd.path:
        raise ConfigError("config.sd.path must name a diffusers Stable Diffusion pipeline folder.")
    if sd.dtype not in DTYPES:
        raise ConfigError(f"config.sd.dtype={sd.dtype!r} must be one of {sorted(DTYPES)}.")
    if sd.num_samples < 1 or sd.num_steps < 1:
        raise ConfigError(f"config.sd.num_samples={sd.num_samples} and num_steps={sd.num_steps} must be at least 1.")
    pipeline = stable_diffusion.read_pipeline(sd.path, sd.controlnet, sd.dtype)
    shape = latent_shape(pipeline, sd.image_size, sd.num_samples)
    control = control_image(pipeline, sd.control_image, shape[1])
    concat = inpaint_inputs(pipeline, sd.image, sd.mask_image, shape[1])
    contexts = text_contexts(pipeline, [sd.prompt, sd.negative_prompt])
    images = np.asarray(make_pipeline_sampler(pipeline, shape, sd)(jax.random.PRNGKey(config.seed), contexts,
                                                                   control, concat))
    if not np.all(np.isfinite(images)):
        raise FloatingPointError("Sampling the pipeline gave non-finite values.")

    name = "sd_" + (re.sub(r"[^a-z0-9]+", "_", sd.prompt.lower()).strip("_")[:40] or "empty") + \
        f"_ddim{sd.num_steps}_g{sd.guidance_scale:g}"
    folder = os.path.join(workdir, eval_folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name + ".npz")
    np.savez_compressed(path, image=datasets.to_uint8(images), prompt=sd.prompt, negative_prompt=sd.negative_prompt,
                        guidance_scale=sd.guidance_scale, num_steps=sd.num_steps, seed=config.seed)
    save_labelled_grid(images, os.path.join(folder, name + ".png"), sd.num_samples, [sd.prompt[:24] or "''"],
                       f"{os.path.basename(os.path.normpath(sd.path))} ddim {sd.num_steps} g={sd.guidance_scale:g}")
    logging.info("Samples of %r written to %s (.npz and .png).", sd.prompt, os.path.join(folder, name))
    return path
