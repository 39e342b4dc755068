"""`--mode sample` for a text-conditioned model (config.text.conditional): samples of prompts, with
classifier-free guidance against the empty or a negative prompt, on every sampler.

    python main.py --config configs/text/unet_mnist_pairs.py --mode sample --workdir W \\
        --config.sampling.prompt="a 3 left of a 7|a 7 left of a 3" [--config.sampling.prompt_file=FILE] \\
        [--config.sampling.guidance=cfg --config.sampling.guidance_weight=3 --config.sampling.negative_prompt=...]

With guidance 'cfg' and weight w each sample integrates (samplers.guidance.classifier_free_guidance, both
branches in one network call on a doubled batch)

    s_w(x, t | p) = (1 + w) s(x, t | p) - w s(x, t | n),

n the negative prompt (config.sampling.negative_prompt), by default the empty prompt the model learned by
caption dropout. Writes W/<eval_folder>/prompt_step<step>_<method>[_cfg_w<w>].{npz,png}: image uint8
(N, H, W, C), prompt (N,) str, negative_prompt, guidance, guidance_weight, step, method; the grid has a row
per prompt, labelled with it. Refused in one line: a prompt for an unconditional model, a text model without
prompts, a word outside a word vocabulary; a prompt longer than the context is truncated with a warning.
"""
from __future__ import annotations

import math
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import datasets
import models
import sde_lib
from data_sources.tokenizer import TruncationWarning, WordTokenizer, words
from samplers.guidance import classifier_free_guidance
from tasks import latent, text
from tasks.score import make_sample_fn, restore_train_state
from training import parallel
from training.checkpoint import Checkpointer, periodic_steps
from training.validation import ConfigError
from training.writers import save_labelled_grid


def wants_prompts(config) -> bool:
    """Whether this sampling run is about prompts (a text model, or prompts given)."""
    s = config.sampling
    return bool(config.text.conditional or s.prompt.strip() or s.prompt_file)


def read_prompts(config) -> list[str]:
    """config.sampling.prompt split at '|', or the non-empty lines of config.sampling.prompt_file."""
    s = config.sampling
    if s.prompt.strip() and s.prompt_file:
        raise ConfigError("Give config.sampling.prompt or config.sampling.prompt_file, not both.")
    if s.prompt_file:
        if not os.path.isfile(s.prompt_file):
            raise ConfigError(f"config.sampling.prompt_file={s.prompt_file!r} is not a file (one prompt a line).")
        with open(s.prompt_file, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip()]
    else:
        prompts = [p.strip() for p in s.prompt.split("|") if p.strip()]
    if not config.text.conditional:
        raise ConfigError(f"Prompts were given ({prompts[0]!r}...) but the model is not text-conditioned "
                          f"(config.text.conditional=False); sample it without config.sampling.prompt.")
    if not prompts:
        raise ConfigError("A text-conditioned model samples prompts: set config.sampling.prompt (several separated "
                          "by '|') or config.sampling.prompt_file.")
    return prompts


def encode_prompts(tokenizer, prompts: list[str]) -> np.ndarray:
    """int32 (len(prompts), L): ConfigError for a word outside a word vocabulary; a prompt longer than the
    context keeps its first tokens, with a one-line warning."""
    if isinstance(tokenizer, WordTokenizer):
        for p in prompts:
            unknown = [w for w in words(p) if w not in tokenizer.ids]
            if unknown:
                raise ConfigError(f"The word {unknown[0]!r} of the prompt {p!r} is not in the model's vocabulary "
                                  f"of {tokenizer.vocab_size - 4} words (built from its training captions).")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TruncationWarning)
        ids = tokenizer(prompts)
    for w in caught:
        logging.warning("%s", w.message)
    return ids


def check_guidance(config) -> None:
    """ConfigError in one line for guidance prompts cannot take: only 'cfg' (or 'none', without a weight or
    negative prompt)."""
    s = config.sampling
    if s.guidance not in ("none", "cfg"):
        raise ConfigError(f"config.sampling.guidance={s.guidance!r}: prompts are guided by 'cfg' (or 'none').")
    if s.guidance == "none" and (s.guidance_weight != 0 or s.negative_prompt):
        raise ConfigError("config.sampling.guidance_weight / negative_prompt act only with guidance 'cfg'.")


def prompt_guidance(config, tokenizer, prompts: list[str]):
    """(the prompts' ids (len(prompts), L), make_sample_fn's guide on ids: 'cfg' against the negative prompt n
    as in the module docstring, or None for guidance 'none')."""
    s = config.sampling
    tokens = encode_prompts(tokenizer, prompts + [s.negative_prompt])
    null = tokens[-1]
    guide = None if s.guidance == "none" else (
        lambda score_fn_for, ids: classifier_free_guidance(score_fn_for, ids, null, s.guidance_weight))
    return tokens[:-1], guide


def sample_prompts(config, workdir: str, eval_folder: str) -> str:
    """Run `--mode sample` on prompts; returns the path of the .npz written."""
    s = config.sampling
    prompts = read_prompts(config)
    check_guidance(config)
    tokenizer, prompt, frozen, _ = text.prompt_conditioning(config, workdir)
    tokens, guide = prompt_guidance(config, tokenizer, prompts)
    tokens = np.repeat(tokens, s.num_samples, axis=0)

    space = latent.score_space(config)  # a latent model's autoencoder decodes its samples
    net_config, sde, mesh = space.net_config, sde_lib.from_config(config), parallel.make_mesh()
    model = models.get_model(net_config)
    total = len(tokens)
    chunk = math.ceil(min(total, config.eval.batch_size) / mesh.size) * mesh.size
    sample_fn = make_sample_fn(net_config, sde, model, chunk, mesh, guide=guide, decode=space.decode, prompt=prompt)
    folder, steps = periodic_steps(workdir)
    if not steps or (s.checkpoint and s.checkpoint not in steps):
        raise ConfigError(f"No checkpoint {s.checkpoint or ''} in {folder} (it holds {sorted(steps)}); train first.")
    step = s.checkpoint or max(steps)
    with Checkpointer(workdir) as checkpointer:
        state = restore_train_state(checkpointer, step, net_config, model, mesh, prompt=prompt)
    variables = prompt.variables(state.ema_variables, frozen)

    index = np.minimum(np.arange(math.ceil(total / chunk) * chunk), total - 1)  # the last chunk repeats
    rng = jax.random.PRNGKey(config.seed)
    images = np.concatenate([parallel.gather(sample_fn(jax.random.fold_in(rng, c), variables,
                                                       jnp.asarray(tokens[index[c * chunk:(c + 1) * chunk]])))
                             for c in range(len(index) // chunk)])[:total]
    name = f"prompt_step{step}_{s.method}" + (f"_cfg_w{s.guidance_weight:g}" if s.guidance == "cfg" else "")
    path = os.path.join(workdir, eval_folder, name + ".npz")
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez_compressed(path, image=datasets.to_uint8(images), prompt=np.repeat(prompts, s.num_samples),
                            negative_prompt=s.negative_prompt, guidance=s.guidance, guidance_weight=s.guidance_weight,
                            step=step, method=s.method)
        caption = f"{s.method} step {step}" + (f" cfg w={s.guidance_weight:g}" + (
            f" vs {s.negative_prompt!r}" if s.negative_prompt else "") if s.guidance == "cfg" else "")
        save_labelled_grid(images, path[:-4] + ".png", s.num_samples, prompts, caption)
        logging.info("Samples of %d prompts written to %s (.npz and .png).", len(prompts), path[:-4])
    return path
