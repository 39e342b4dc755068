"""`--mode sample` of a concat-conditioned score model (config.concat.kind, tasks/concat.py): super-resolution,
inpainting or map-to-image samples of given images.

    python main.py --config CONFIG --mode sample --workdir W \
        (--config.sampling.input=image.png | --config.sampling.input_indices=0,1,2) \
        [--config.sampling.guidance=cfg --config.sampling.guidance_weight=2]

Each input x (a file, resized to the data's geometry and channels, or a test-split image) gives the condition
c = condition(x) as in training (a file's inpainting mask is that of index 0), and config.sampling.num_samples
samples are drawn by config.sampling.method (any sampler) from s(x_t, t | c), or with 'cfg' from

    s_w(x_t, t | c) = (1 + w) s(x_t, t | c) - w s(x_t, t | null),   null = the zero image,

one network call on the doubled batch (samplers.guidance.classifier_free_guidance). Writes
W/<eval_folder>/concat_<kind>_step<step>_<method>[_cfg_w<w>].{npz,png}: images, conditions, inputs and their
test indices (-1: a file); the grid has a row per input, condition | samples | input.
"""
from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import datasets
import models
import sde_lib
from modes import sample as plain
from samplers import guidance as guidance_lib
from tasks import concat, latent
from tasks.score import make_sample_fn, restore_train_state
from training import parallel
from training.checkpoint import Checkpointer
from training.validation import ConfigError
from training.writers import save_labelled_grid


def validate(config) -> None:
    """ConfigError in one line for sampling options a concat-conditioned model cannot take."""
    s = config.sampling
    concat.validate(config)
    if s.task != "generate":
        raise ConfigError(f"config.sampling.task={s.task!r}: a concat-conditioned model samples from its condition "
                          f"(task 'generate'); its inputs are config.sampling.input or input_indices.")
    if s.guidance not in ("none", "cfg"):
        raise ConfigError(f"config.sampling.guidance={s.guidance!r}: a concat-conditioned model is guided by 'cfg' "
                          f"(against the null condition) or 'none'.")
    if s.guidance == "none" and s.guidance_weight != 0:
        raise ConfigError(f"config.sampling.guidance_weight={s.guidance_weight} has no effect with guidance 'none'; "
                          f"set config.sampling.guidance='cfg'.")
    if s.num_samples < 1:
        raise ConfigError(f"config.sampling.num_samples={s.num_samples} must be at least 1.")


def make_guide(config):
    """make_sample_fn's guide: classifier-free guidance of the (labels, concat) condition against (None, 0)."""
    s = config.sampling
    if s.guidance == "none":
        return None
    return functools.partial(guidance_lib.classifier_free_guidance, null_label=(None, 0.0), w=s.guidance_weight)


def sample(config, workdir: str, eval_folder: str) -> str:
    """Run `--mode sample` for a concat-conditioned model; returns the path of the .npz written."""
    validate(config)
    s = config.sampling
    space = latent.score_space(config)
    inputs, index = plain.load_inputs(config)
    references = inputs / np.float32(255)
    cond = concat.condition_fn(config)(references, np.maximum(index, 0))
    concat.check_condition(config, cond)

    mesh = parallel.make_mesh()
    model = models.get_model(space.net_config)
    total = len(cond) * s.num_samples
    chunk = math.ceil(min(total, config.eval.batch_size) / mesh.size) * mesh.size
    sample_fn = make_sample_fn(space.net_config, sde_lib.from_config(config), model, chunk, mesh,
                               guide=make_guide(config), decode=space.decode)
    step = plain.newest_checkpoint(config, workdir)
    with Checkpointer(workdir) as checkpointer:
        variables = restore_train_state(checkpointer, step, space.net_config, model, mesh).ema_variables

    given = np.repeat(np.asarray(concat.to_denoiser(cond, space.net_config)), s.num_samples, axis=0)
    pad = np.minimum(np.arange(math.ceil(total / chunk) * chunk), total - 1)  # the last chunk repeats the last
    rng, out = jax.random.PRNGKey(config.seed), []
    for k in range(len(pad) // chunk):
        part = pad[k * chunk:(k + 1) * chunk]
        out.append(parallel.gather(sample_fn(jax.random.fold_in(rng, k), variables, None, None,
                                             concat=jnp.asarray(given[part]))))
    images = np.concatenate(out)[:total]

    guided = f"_cfg_w{s.guidance_weight:g}" if s.guidance == "cfg" else ""
    name = f"concat_{config.concat.kind}_step{step}_{s.method}{guided}"
    folder = os.path.join(workdir, eval_folder)
    path = os.path.join(folder, name + ".npz")
    if jax.process_index() != 0:
        return path
    os.makedirs(folder, exist_ok=True)
    np.savez_compressed(path, image=datasets.to_uint8(images), condition=datasets.to_uint8(cond), input=inputs,
                        input_index=index, guidance=s.guidance, guidance_weight=s.guidance_weight, step=step,
                        method=s.method)
    names = ["file" if i < 0 else f"#{i}" for i in index]
    caption = f"concat {config.concat.kind} {s.method} step {step}" + (
        f" cfg w={s.guidance_weight:g}" if s.guidance == "cfg" else "")
    save_labelled_grid(concat.rows(config, cond, images, references, s.num_samples),
                       os.path.join(folder, name + ".png"), s.num_samples + 2, names, caption)
    logging.info("Samples written to %s (.npz and .png): condition | samples | input.", os.path.join(folder, name))
    return path
