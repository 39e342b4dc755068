"""`--mode sample` of a ControlNet run (config.training.task='controlnet'): samples that follow a condition.

    python main.py --config configs/controlnet/canny_digits.py --mode sample --workdir W \
        --config.controlnet.base_workdir=B (--config.sampling.condition=edges.png | --config.sampling.input_indices=0,1)
        [--config.sampling.labels=3,5 [--config.sampling.guidance=cfg --config.sampling.guidance_weight=2]]
        [--config.sampling.prompt="a 3 left of a 7|a 7 left of a 3" [--config.sampling.guidance=cfg ...]]

The condition c is an image file (config.sampling.condition: the condition itself, e.g. an edge map; resized to
config.data.image_size with a one-line note when its size differs; its channels matched to the ControlNet's,
gray <-> equal RGB channels, or refused) or test-split images (config.sampling.input_indices), whose
conditions are computed as in training. The score sampled by config.sampling.method (any sampler) is

    s(x_t, t | y, c) = s_base(x_t, t, y; control = scale_residuals(ControlNet(x_t, t, c, y), s))

with s = config.controlnet.conditioning_scale (one number, or one per output: the down residuals, then mid) and
y the class of a class-conditional base (config.model.num_classes > 0), given to both networks: every condition
is sampled with every class of config.sampling.labels (modes.sample.parse_labels; '' or 'null' is the null
label, 'all' every class). Guidance 'cfg' with weight w = config.sampling.guidance_weight (samplers.guidance,
one network call on the doubled batch [x, x], the condition image in both halves) samples

    s_w(x_t, t | y, c) = (1 + w) s(x_t, t | y, c) - w s(x_t, t | null, c),

the null label's branch learned by the base's (and the ControlNet's) label dropout, training.label_dropout.
On a text-conditioned base (config.text.conditional) every condition is instead sampled with every prompt p of
config.sampling.prompt / prompt_file, its context T(p) (the base's frozen text tower) reaching both networks,
and 'cfg' samples (modes/prompts.py) s_w(x_t, t | p, c) = (1 + w) s(x_t, t | p, c) - w s(x_t, t | n, c), n the
negative prompt (by default the empty one, learned by caption dropout). Refused in one line: prompts on a base
without text, classifier guidance, cfg on an unconditional base and a class outside 0..num_classes-1.
Writes W/<eval_folder>/controlnet_step<step>_<method>_s<scale>[_cfg_w<w>].{npz,png}: images, labels (-1: null),
prompts on a text base, conditions and, per (condition, class or prompt) row labelled with both, the condition
beside its num_samples samples;
with a reference (test images, or a 'canny' condition file) also the edge F1 of the samples (<name>_edge_f1.json).
"""
from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from PIL import Image

import datasets
import sde_lib
from data_sources import conditions
from models import controlnet
from models.prompt import PromptConditioning
from modes import prompts, sample_files
from modes import sample as plain
from tasks import controlnet as task_lib
from tasks.score import make_sample_fn
from training import parallel
from training.checkpoint import Checkpointer, abstract_like
from training.files import atomic_write_json
from training.state import create_train_state, get_optimizer
from training.validation import ConfigError


def parse_scale(spec: str, num_outputs: int):
    """config.controlnet.conditioning_scale: one number, or num_outputs comma-separated ones."""
    try:
        values = tuple(float(v) for v in str(spec).split(","))
    except ValueError:
        raise ConfigError(f"config.controlnet.conditioning_scale={spec!r} must be a number or comma-separated "
                          f"numbers.") from None
    if len(values) not in (1, num_outputs):
        raise ConfigError(f"config.controlnet.conditioning_scale has {len(values)} numbers; give one, or "
                          f"{num_outputs} (one per down residual, then the mid block's).")
    return values[0] if len(values) == 1 else values


def load_condition_file(path: str, size: int, channels: int) -> np.ndarray:
    """(1, size, size, channels) in [0, 1] from an image file (see the module docstring)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config.sampling.condition={path!r} is not a file.")
    with Image.open(path) as im:
        image = np.asarray(im.convert("RGB") if im.mode not in ("L", "1", "I;16") else im.convert("L"))
        if image.shape[:2] != (size, size):
            logging.info("The condition %s is %dx%d; resized to %dx%d (config.data.image_size).", path,
                         image.shape[1], image.shape[0], size, size)
            image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    image = image[..., None] if image.ndim == 2 else image
    if image.shape[-1] != channels:
        if image.shape[-1] == 3 and channels == 1 and np.all(image == image[..., :1]):
            image = image[..., :1]
        elif image.shape[-1] == 1:
            image = np.repeat(image, channels, axis=-1)
        else:
            raise ConfigError(f"The condition {path} has {image.shape[-1]} distinct channels; this ControlNet takes "
                              f"{channels} ('{'folder' if channels > 1 else 'gray'}' conditions).")
    return (image / np.float32(255))[None]


def load_conditions(config, test) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(conditions (K, H, W, C_c), reference edges or None, test index per condition, -1 for a file)."""
    s, c, d = config.sampling, config.controlnet, config.data
    if bool(s.condition) == bool(s.input_indices.strip()):
        raise ConfigError("A ControlNet samples from exactly one of config.sampling.condition (an image file) and "
                          "config.sampling.input_indices (test-split indices such as '0,1,2').")
    if s.condition:
        cond = load_condition_file(s.condition, d.image_size, task_lib.condition_channels(config))
        return cond, (cond if c.condition == "canny" else None), np.array([-1])
    try:
        indices = np.array([int(v) for v in s.input_indices.split(",")])
    except ValueError:
        raise ConfigError(f"config.sampling.input_indices={s.input_indices!r} must be comma-separated integers.") \
            from None
    if np.any(indices < 0) or np.any(indices >= len(test)):
        raise ConfigError(f"config.sampling.input_indices {indices.tolist()} must lie in 0..{len(test) - 1}.")
    images = test.source.read(indices)[0] / np.float32(255)
    return (task_lib.condition_fn(config, test)(images, indices), conditions.canny(images, c.canny_sigma), indices)


def load(config, workdir: str, mesh):
    """(the controlled network at config.controlnet.conditioning_scale, the frozen base, the newest ControlNet
    checkpoint of `workdir`); ConfigError if there is none, or it was trained on another base."""
    base = task_lib.open_base(config, mesh)
    controlled, params = task_lib.build(config, base)
    scale = parse_scale(config.controlnet.conditioning_scale, controlnet.num_outputs(params))
    optimizer = get_optimizer(config.optim)
    with Checkpointer(workdir) as checkpointer:
        restored = checkpointer.latest(abstract_like(
            lambda: create_train_state(jax.random.PRNGKey(0), base.controlnet_variables(params), optimizer), mesh))
    if restored is None:
        raise ConfigError(f"No ControlNet checkpoint in {workdir}; train one with --mode train and the same --config.")
    if restored.meta.get("frozen") != base.record:
        raise ConfigError(f"The ControlNet {restored.path} was trained on {restored.meta.get('frozen')} but "
                          f"config.controlnet.base_workdir gives {base.record}.")
    return dataclasses.replace(controlled, conditioning_scale=scale), base, restored


def sample(config, workdir: str, eval_folder: str) -> str:
    """Run `--mode sample` for a ControlNet; returns the path of the .npz written."""
    s, num_classes = config.sampling, config.model.num_classes
    texts = prompts.read_prompts(config) if prompts.wants_prompts(config) else None
    if texts is not None:
        prompts.check_guidance(config)
    else:
        plain.validate(config)
        if s.guidance == "classifier":
            raise ConfigError("config.sampling.guidance='classifier': a ControlNet is guided by 'cfg' (or 'none').")
        classes = plain.parse_labels(s.labels, num_classes, "controlnet")
        guide = plain.make_guide(config, classes, num_classes)
    mesh = parallel.make_mesh()
    test = datasets.load_split(config, "test", host_index=0, host_count=1)
    cond, reference, index = load_conditions(config, test)
    controlled, base, restored = load(config, workdir, mesh)
    scale = controlled.conditioning_scale
    if texts is not None:  # a row per (condition, prompt), the prompts' ids in place of class labels
        tokens, guide = prompts.prompt_guidance(config, base.tokenizer, texts)
        classes = texts

    row_cond = np.repeat(np.arange(len(cond)), len(classes))  # rows: every condition with every class
    row_classes = classes * len(cond)
    total = len(row_cond) * s.num_samples
    chunk = math.ceil(min(total, config.eval.batch_size) / mesh.size) * mesh.size
    sample_fn = make_sample_fn(config, sde_lib.from_config(config), controlled, chunk, mesh, guide=guide,
                               prompt=base.prompt)
    hints = np.repeat(cond[row_cond], s.num_samples, axis=0)
    if texts is not None:
        labels = np.repeat(np.tile(tokens, (len(cond), 1)), s.num_samples, axis=0)
    else:
        labels = np.repeat([num_classes if y is None else y for y in row_classes], s.num_samples)
    variables = PromptConditioning.variables({"params": restored.state.ema_params}, base.tower)
    pad = np.minimum(np.arange(math.ceil(total / chunk) * chunk), total - 1)
    rng, out = jax.random.PRNGKey(config.seed), []
    for k in range(len(pad) // chunk):
        part = pad[k * chunk:(k + 1) * chunk]
        out.append(parallel.gather(sample_fn(jax.random.fold_in(rng, k), variables,
                                             jnp.asarray(labels[part]) if num_classes or texts else None,
                                             hint=jnp.asarray(hints[part]), base=base.variables)))
    images = np.concatenate(out)[:total]

    scale_name = "-".join(f"{v:g}" for v in np.atleast_1d(scale))
    name = sample_files.sample_name("controlnet", restored.step, s, f"s{scale_name}")
    folder = os.path.join(workdir, eval_folder)
    shown = np.broadcast_to(cond.mean(-1, keepdims=True), (len(cond), *images.shape[1:]))[row_cond]
    names = [("file" if index[k] < 0 else f"#{index[k]}") + (f" {y}" if texts else "" if not num_classes else
                                                             " null" if y is None else f" y={y}")
             for k, y in zip(row_cond, row_classes)]
    caption = f"controlnet {s.method} step {restored.step} scale {scale_name}" + sample_files.guided(s, " ")
    path = sample_files.write(folder, name, images, cond, shown, names, caption, input_index=index,
                              label=np.where(labels == num_classes, -1, labels) if num_classes else np.full(total, -1),
                              row_condition=row_cond, conditioning_scale=np.atleast_1d(scale), guidance=s.guidance,
                              guidance_weight=s.guidance_weight, step=restored.step, method=s.method,
                              **({} if texts is None else {"prompt": np.repeat(row_classes, s.num_samples)}))
    if jax.process_index() != 0:
        return path
    if reference is not None:
        f1 = conditions.edge_f1(conditions.canny(images, config.controlnet.canny_sigma),
                                np.repeat(reference[row_cond], s.num_samples, axis=0))
        atomic_write_json(os.path.join(folder, name + "_edge_f1.json"), {"edge_f1": float(f1.mean())})
        logging.info("Edge F1 of the samples against their conditions' edges: %.3f.", f1.mean())
    return path
