"""`--mode sample` of a concat-conditioned score model (config.concat.kind, tasks/concat.py): super-resolution,
inpainting or map-to-image samples of given images, with classes or prompts where the model takes them.

    python main.py --config CONFIG --mode sample --workdir W \
        (--config.sampling.input=image.png | --config.sampling.input_indices=0,1,2) \
        [--config.sampling.labels=3,5 | --config.sampling.prompt="a 3 left of a 7"] \
        [--config.sampling.guidance=cfg --config.sampling.guidance_weight=2]

Each input x (a file, resized to the data's geometry and channels, or a test-split image) gives the condition
c = condition(x) as in training (a file's inpainting mask is that of index 0; with config.sampling.outpaint
'size,top,left' an inpainting model fills everything around the input, resized and placed on the canvas,
modes.sample.outpaint_inputs). A class-conditional model
(config.model.num_classes) samples each input with every class y of config.sampling.labels ('' or 'null': the
null class), a text model (config.text.conditional) with every prompt. config.sampling.num_samples samples are
drawn by config.sampling.method (any sampler) from s(x_t, t | y, c), or with 'cfg' from

    s_w(x_t, t | y, c) = (1 + w) s(x_t, t | y, c) - w s(x_t, t | null, null),

both dropped as in training (the null class or the negative / empty prompt, the zero image), one network call on
the doubled batch (samplers.guidance.classifier_free_guidance). Writes (modes/sample_files.py)
W/<eval_folder>/concat_<kind>_step<step>_<method>[_cfg_w<w>].{npz,png}: images, conditions, inputs and their
test indices (-1: a file), each sample's label (-1: null or none) or prompt, for inpainting the completed
images (tasks.concat.complete: the known pixels kept); the grid has a row per (input,
class or prompt), condition | samples | input.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

import datasets
import models
import sde_lib
from data_sources import conditions
from modes import prompts, sample_files
from modes import sample as plain
from samplers import guidance as guidance_lib
from tasks import concat, latent, text
from tasks.score import make_sample_fn, restore_train_state
from training import parallel
from training.checkpoint import Checkpointer
from training.validation import ConfigError


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
    if s.guidance == "none" and (s.guidance_weight != 0 or s.negative_prompt):
        raise ConfigError(f"config.sampling.guidance_weight={s.guidance_weight} / negative_prompt act only with "
                          f"guidance 'cfg'.")
    if s.num_samples < 1:
        raise ConfigError(f"config.sampling.num_samples={s.num_samples} must be at least 1.")
    if s.outpaint and config.concat.kind != "inpaint":
        raise ConfigError(f"config.sampling.outpaint needs an inpainting model (config.concat.kind='inpaint'), not "
                          f"{config.concat.kind!r}.")


@dataclasses.dataclass(frozen=True)
class Labels:
    """The network's label input beside the condition image, one kind of row each: names (for the grid), values
    ((K,) classes or (K, L) prompt token ids; None for a model without labels), the null value guidance drops them
    to (the null class, the negative or empty prompt's ids, or None), and a text model's prompts, prompt
    conditioning and frozen tower."""

    names: list
    values: np.ndarray | None = None
    null: object = None
    prompts: tuple = ()
    prompt: object = None
    frozen: dict | None = None


def read_labels(config, workdir: str) -> Labels:
    """Labels of config.sampling: the prompts (prompt / prompt_file, against negative_prompt) of a text model, the
    classes (labels: '' or 'null' the null class, 'all', or '3,5') of a class-conditional one, else none."""
    s, num_classes = config.sampling, config.model.num_classes
    if prompts.wants_prompts(config):
        given = prompts.read_prompts(config)
        tokenizer, prompt, frozen, _ = text.prompt_conditioning(config, workdir)
        tokens = prompts.encode_prompts(tokenizer, given + [s.negative_prompt])
        return Labels([f" {p[:20]!r}" for p in given], tokens[:-1], tokens[-1], tuple(given), prompt, frozen)
    classes = plain.parse_labels(s.labels, num_classes, "concat")
    if not num_classes:
        return Labels([""])
    return Labels([" null" if y is None else f" y={y}" for y in classes],
                  np.array([num_classes if y is None else y for y in classes]), num_classes)


def make_guide(config, null=None):
    """make_sample_fn's guide: classifier-free guidance of the (labels, concat) condition against (null, 0), each
    dropped to its null: the null class or prompt (None: a model without labels) and the null image."""
    s = config.sampling
    if s.guidance == "none":
        return None
    return functools.partial(guidance_lib.classifier_free_guidance, null_label=(null, 0.0), w=s.guidance_weight)


def sample(config, workdir: str, eval_folder: str) -> str:
    """Run `--mode sample` for a concat-conditioned model; returns the path of the .npz written."""
    validate(config)
    s = config.sampling
    space = latent.score_space(config)
    inputs, index = plain.load_inputs(config)
    references = inputs / np.float32(255)
    if s.outpaint:  # the inputs on the canvas, the region to fill all around them
        canvas, known = plain.outpaint_inputs(config, inputs)
        references = canvas / np.float32(255)
        cond = conditions.masked(references, 1 - known[..., None])
    else:
        cond = concat.condition_fn(config)(references, np.maximum(index, 0))
    concat.check_condition(config, cond)
    labels = read_labels(config, workdir)

    mesh = parallel.make_mesh()
    model = models.get_model(space.net_config)
    row_cond = np.repeat(np.arange(len(cond)), len(labels.names))  # rows: every input with every class / prompt
    row_label = np.tile(np.arange(len(labels.names)), len(cond))
    total = len(row_cond) * s.num_samples
    chunk = math.ceil(min(total, config.eval.batch_size) / mesh.size) * mesh.size
    sample_fn = make_sample_fn(space.net_config, sde_lib.from_config(config), model, chunk, mesh,
                               guide=make_guide(config, labels.null), decode=space.decode, prompt=labels.prompt)
    step = plain.newest_checkpoint(config, workdir)
    with Checkpointer(workdir) as checkpointer:
        variables = restore_train_state(checkpointer, step, space.net_config, model, mesh,
                                        prompt=labels.prompt).ema_variables
    if labels.prompt is not None:
        variables = labels.prompt.variables(variables, labels.frozen)

    given = np.repeat(np.asarray(concat.to_denoiser(cond, space.net_config))[row_cond], s.num_samples, axis=0)
    values = None if labels.values is None else np.repeat(labels.values[row_label], s.num_samples, axis=0)
    pad = np.minimum(np.arange(math.ceil(total / chunk) * chunk), total - 1)  # the last chunk repeats the last
    rng, out = jax.random.PRNGKey(config.seed), []
    for k in range(len(pad) // chunk):
        part = pad[k * chunk:(k + 1) * chunk]
        out.append(parallel.gather(sample_fn(jax.random.fold_in(rng, k), variables,
                                             None if values is None else jnp.asarray(values[part]),
                                             concat=jnp.asarray(given[part]))))
    images = np.concatenate(out)[:total]

    names = [("file" if index[k] < 0 else f"#{index[k]}") + labels.names[j] for k, j in zip(row_cond, row_label)]
    caption = f"concat {config.concat.kind} {s.method} step {step}" + sample_files.guided(s, " ")
    label = (np.full(total, -1) if labels.values is None or labels.prompt is not None else
             np.where(values == config.model.num_classes, -1, values))
    return sample_files.write(
        os.path.join(workdir, eval_folder), sample_files.sample_name(f"concat_{config.concat.kind}", step, s), images,
        cond, concat.shown(config, cond)[row_cond], names, caption, references[row_cond], input=inputs,
        input_index=index, row_condition=row_cond, label=label, guidance=s.guidance,
        guidance_weight=s.guidance_weight, step=step, method=s.method,
        **({} if labels.prompt is None else {"prompt": np.repeat(np.array(labels.prompts)[row_label], s.num_samples)}),
        **({} if config.concat.kind != "inpaint" else
           {"completed": datasets.to_uint8(concat.complete(np.repeat(cond[row_cond], s.num_samples, 0), images))}))
