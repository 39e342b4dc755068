"""`--mode sample`: class-conditional, guided, inpainted, colorized, super-resolved or img2img samples from a trained model.

    python main.py --config CONFIG --mode sample --workdir W [--config.sampling.<field>=...]

Restores the EMA parameters of the newest periodic checkpoint in W/checkpoints (or the one of step
config.sampling.checkpoint), samples with config.sampling.method, and writes to W/<eval_folder>/:

    <name>.npz  image uint8 (N, H, W, C); label (N,) (-1: unconditional); guidance, guidance_weight, step,
                method; for inpaint / colorize / superres / img2img also input uint8 (K, H, W, C), input_index (K,) (-1: a file)
                and mask (and strength); sample i belongs to row i // num_samples of the grid
    <name>.png  one row per class (generate) or per input (its observation first, then the samples),
                each row labelled, with the sampler, guidance and weight in a caption

where <name> = <task>_step<step>_<method>[_<guidance>_w<weight>]. Class-conditional generations are also
scored by the domain classifier (--mode train_classifier), when one is there: <name>_accuracy.json holds
the fraction of each class's samples it assigns to that class.

Classifier-free guidance needs a class-conditional model; classifier guidance ('classifier') needs the
noise-conditional classifier of --mode train_classifier --config.classifier.noise_conditional=True and
guides the unconditional score (of an unconditional model, or the null label of a conditional one).
The config.sampling fields (configs/defaults.py): task ('generate' | 'inpaint' | 'colorize' | 'superres': the
input's factor x factor block means kept, the rest sampled (samplers.inverse.superresolution) | 'img2img':
SDEdit, each input noised to time strength T by the forward marginal, then denoised by any sampler,
sde_lib.Restarted), strength, labels ('' = every class for generate, unconditional for the other tasks;
'null' = unconditional; or '3,5'), guidance ('none' | 'cfg' | 'classifier'), guidance_weight, num_samples (per
class or input), input (an image file) or input_indices (indices into the test split), mask ('half' | 'center'
| 'bottom' | an image file, white = known), outpaint ('size,top,left': inpaint outside the input, resized to
size x size and placed at (top, left) on the image_size canvas, in place of mask), checkpoint.
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
from data_sources import conditions
from data_sources.local import decode_image
from data_sources.preprocess import ImageFormat
from evaluation import classifier, features
from modes import prompts
from samplers import guidance as guidance_lib
from samplers import inverse
from tasks import latent
from tasks.score import make_sample_fn, restore_train_state
from training import parallel
from training.checkpoint import Checkpointer, periodic_steps
from training.files import atomic_write_json
from training.validation import ConfigError
from training.writers import save_labelled_grid

TASKS = ("generate", "inpaint", "colorize", "superres", "img2img")
MASKS = {  # name -> (H, W) -> 1 where the pixel is known
    "half": lambda h, w: np.arange(w)[None, :].repeat(h, 0) < w // 2,  # the right half is filled in
    "center": lambda h, w: ~np.outer((np.arange(h) >= h // 4) & (np.arange(h) < h - h // 4),
                                     (np.arange(w) >= w // 4) & (np.arange(w) < w - w // 4)),
    "bottom": lambda h, w: np.arange(h)[:, None].repeat(w, 1) < h // 2,  # the bottom half is filled in
}


def parse_labels(spec: str, num_classes: int, task: str) -> list[int | None]:
    """The classes asked for by config.sampling.labels; None is the unconditional (null) class."""
    spec = spec.strip().lower()
    if spec in ("", "all") and num_classes == 0:
        if spec == "all":
            raise ConfigError("config.sampling.labels='all' needs a class-conditional model; this one has "
                              "config.model.num_classes=0.")
        return [None]
    if spec == "null" or (spec == "" and task != "generate"):
        return [None]
    if spec in ("", "all"):
        return list(range(num_classes))
    if num_classes == 0:
        raise ConfigError(f"config.sampling.labels={spec!r} asks for classes, but the model is unconditional "
                          f"(config.model.num_classes=0); leave labels empty, or guide it towards classes with "
                          f"config.sampling.guidance='classifier'.")
    try:
        labels = [int(v) for v in spec.split(",")]
    except ValueError:
        raise ConfigError(f"config.sampling.labels={spec!r} must be '', 'all', 'null' or comma-separated class "
                          f"numbers such as '3,5'.") from None
    bad = [y for y in labels if not 0 <= y < num_classes]
    if bad:
        raise ConfigError(f"config.sampling.labels has class(es) {bad} outside 0..{num_classes - 1}.")
    return labels


def load_mask(spec: str, size: int) -> np.ndarray:
    """(size, size) float mask, 1 where known: a name of MASKS or an image file (white = known)."""
    if spec in MASKS:
        return MASKS[spec](size, size).astype(np.float32)
    if not os.path.isfile(spec):
        raise ConfigError(f"config.sampling.mask={spec!r} is neither one of {sorted(MASKS)} nor an image file.")
    from PIL import Image

    with Image.open(spec) as im:
        mask = np.asarray(im.convert("L"))
    if mask.shape != (size, size):
        raise ConfigError(f"The mask image {spec} is {mask.shape[1]}x{mask.shape[0]}; it must be {size}x{size} "
                          f"(config.data.image_size), white where the pixel is known.")
    known = (mask >= 128).astype(np.float32)
    if known.min() == known.max():
        raise ConfigError(f"The mask image {spec} is {'white' if known.min() else 'black'} everywhere: "
                          f"{'nothing is left to fill' if known.min() else 'no pixel is known'}; white = known, "
                          f"black = fill.")
    return known


def outpaint_geometry(spec: str, canvas: int) -> tuple[int, int, int]:
    """(size, top, left) of config.sampling.outpaint 'size,top,left': the input, resized to size x size, at row
    `top`, column `left` of the canvas (config.data.image_size a side); ConfigError in one line unless it lies
    inside the canvas and leaves something to fill."""
    try:
        size, top, left = (int(v) for v in spec.split(","))
    except ValueError:
        raise ConfigError(f"config.sampling.outpaint={spec!r} must be 'size,top,left', three integers: the input "
                          f"resized to size x size at that offset on the {canvas}x{canvas} canvas.") from None
    if size < 1 or top < 0 or left < 0 or top + size > canvas or left + size > canvas:
        raise ConfigError(f"config.sampling.outpaint={spec!r}: a {size}x{size} input at row {top}, column {left} "
                          f"must lie inside the {canvas}x{canvas} canvas (config.data.image_size).")
    if size == canvas:
        raise ConfigError(f"config.sampling.outpaint={spec!r} covers the whole {canvas}x{canvas} canvas, so nothing "
                          f"is left to fill; give a smaller size.")
    return size, top, left


def outpaint_inputs(config, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(canvases uint8 (K, S, S, C), known (S, S)): the inputs resized and placed as config.sampling.outpaint says
    (data_sources.conditions.place); the region to fill is everything outside them."""
    d = config.data
    size, top, left = outpaint_geometry(config.sampling.outpaint, d.image_size)
    return conditions.place(ImageFormat(size, d.num_channels).apply(inputs), d.image_size, top, left)


def load_inputs(config) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (K, H, W, C), dataset index per image, -1 for a file) from config.sampling.input (one
    image file, resized to the data's geometry) or config.sampling.input_indices (the test split)."""
    s, d = config.sampling, config.data
    if bool(s.input) == bool(s.input_indices.strip()):
        raise ConfigError(f"config.sampling.task={s.task!r} needs exactly one of config.sampling.input (an image "
                          f"file) and config.sampling.input_indices (test-split indices such as '0,1,2').")
    if s.input:
        if not os.path.isfile(s.input):
            raise ConfigError(f"config.sampling.input={s.input!r} is not a file.")
        return decode_image(s.input, ImageFormat(d.image_size, d.num_channels))[None], np.array([-1])
    try:
        indices = np.array([int(v) for v in s.input_indices.split(",")])
    except ValueError:
        raise ConfigError(f"config.sampling.input_indices={s.input_indices!r} must be comma-separated integers.") \
            from None
    test = datasets.load_split(config, "test", host_index=0, host_count=1)
    if np.any(indices < 0) or np.any(indices >= len(test)):
        raise ConfigError(f"config.sampling.input_indices {indices.tolist()} must lie in 0..{len(test) - 1} "
                          f"(the test split of {d.dataset}).")
    return test.source.read(indices)[0], indices


def validate(config) -> None:
    """ConfigError in one line for a sampling task, guidance or number of samples this model cannot take."""
    s, num_classes = config.sampling, config.model.num_classes
    if s.task not in TASKS:
        raise ConfigError(f"config.sampling.task={s.task!r} must be one of {list(TASKS)}.")
    guidance_lib.check_guidance(s.guidance, num_classes)
    if s.num_samples < 1:
        raise ConfigError(f"config.sampling.num_samples={s.num_samples} must be at least 1.")
    if s.task == "img2img" and not 0.0 < s.strength <= 1.0:
        raise ConfigError(f"config.sampling.strength={s.strength} must lie in (0, 1]: the fraction of the diffusion "
                          f"the input is noised through before it is denoised (1: all of it).")
    if s.guidance == "none" and s.guidance_weight != 0:
        raise ConfigError(f"config.sampling.guidance_weight={s.guidance_weight} has no effect with guidance 'none'; "
                          f"set config.sampling.guidance to 'cfg' or 'classifier'.")
    if s.outpaint and s.task != "inpaint":
        raise ConfigError(f"config.sampling.outpaint is inpainting outside the input: it needs task 'inpaint', not "
                          f"{s.task!r}.")


def make_guide(config, classes, num_classes: int, log_prob_fn=None):
    """make_sample_fn's guide for config.sampling.guidance: samplers.guidance.guided_score_fn with
    w = config.sampling.guidance_weight (None for 'none'); ConfigError if `classes` asks for unconditional
    samples (None), which have no class to guide towards."""
    s = config.sampling
    if s.guidance == "none":
        return None
    if None in classes:
        raise ConfigError(f"Guidance {s.guidance!r} needs classes to guide towards, but config.sampling.labels="
                          f"{s.labels!r} asks for unconditional samples; name the classes, e.g. '3,5'.")
    return functools.partial(guidance_lib.guided_score_fn, num_classes=num_classes, guidance=s.guidance,
                             weight=s.guidance_weight, log_prob_fn=log_prob_fn)


def _row_labels(classes, rows: int, task: str) -> list[int | None]:
    if task == "generate" or len(classes) == rows:
        return classes
    if len(classes) == 1:
        return classes * rows
    raise ConfigError(f"config.sampling.labels gives {len(classes)} classes for {rows} inputs; give one class, "
                      f"one per input, or none.")


def newest_checkpoint(config, workdir: str) -> int:
    """config.sampling.checkpoint, or the newest periodic checkpoint's step; ConfigError if it is not there."""
    folder, steps = periodic_steps(workdir)
    if not steps:
        raise ConfigError(f"No checkpoint in {folder}; train one first with --mode train and the same --config and "
                          f"--workdir.")
    step = config.sampling.checkpoint or max(steps)
    if step not in steps:
        raise ConfigError(f"config.sampling.checkpoint={step} is not in {folder}, which holds the steps "
                          f"{sorted(steps)}.")
    return step


def sample(config, workdir: str, eval_folder: str) -> str:
    """Run `--mode sample`; returns the path of the .npz written. ControlNets: modes/controlnet_sample.py;
    prompts: modes/prompts.py; concat-conditioned models: modes/concat_sample.py."""
    if config.training.task == "controlnet":
        from modes import controlnet_sample  # here: it reads this module's label and guidance checks

        return controlnet_sample.sample(config, workdir, eval_folder)
    if config.concat.kind:
        from modes import concat_sample  # here: it reads this module's inputs and checkpoint helpers

        return concat_sample.sample(config, workdir, eval_folder)
    if prompts.wants_prompts(config):
        return prompts.sample_prompts(config, workdir, eval_folder)
    validate(config)
    s, d = config.sampling, config.data
    space = latent.score_space(config)  # refuses a missing or mismatched autoencoder before anything is written
    if space.latents is not None and (s.task != "generate" or s.guidance == "classifier"):
        raise ConfigError(f"config.sampling.task={s.task!r} with guidance {s.guidance!r}: a latent model "
                          f"(config.latent.autoencoder_dir) samples only task 'generate' without classifier guidance.")
    sde = sde_lib.from_config(config)
    num_classes = label_classes = config.model.num_classes
    log_prob_fn = None
    if s.guidance == "classifier":
        log_prob_fn, label_classes = classifier.guidance_log_prob_fn(config, workdir, sde)
        if num_classes and label_classes != num_classes:
            raise ConfigError(f"The noise-conditional classifier has {label_classes} classes, the model "
                              f"config.model.num_classes={num_classes}; train them on the same data.")
    classes = parse_labels(s.labels, label_classes, s.task)
    guide = make_guide(config, classes, num_classes, log_prob_fn)
    if s.task == "generate":
        inputs, input_index, mask, observe = None, None, None, None
        row_classes = classes
    else:
        inputs, input_index = load_inputs(config)
        row_classes = _row_labels(classes, len(inputs), s.task)
        mask = None
        if s.task == "inpaint" and s.outpaint:
            inputs, mask = outpaint_inputs(config, inputs)
        elif s.task == "inpaint":
            mask = load_mask(s.mask, d.image_size)
        observe = {"inpaint": functools.partial(inverse.inpainting, mask=mask),
                   "colorize": lambda known: inverse.colorization(inverse.grayscale(known), d.num_channels),
                   "superres": functools.partial(inverse.superresolution, factor=s.factor)}.get(s.task)

    mesh = parallel.make_mesh()
    model = models.get_model(space.net_config)
    total = len(row_classes) * s.num_samples
    chunk = math.ceil(min(total, config.eval.batch_size) / mesh.size) * mesh.size
    sample_fn = make_sample_fn(space.net_config, sde, model, chunk, mesh, guide=guide, observe=observe,
                               decode=space.decode, strength=s.strength if s.task == "img2img" else None)

    step = newest_checkpoint(config, workdir)
    with Checkpointer(workdir) as checkpointer:
        variables = restore_train_state(checkpointer, step, space.net_config, model, mesh).ema_variables

    labels = np.repeat([label_classes if y is None else y for y in row_classes], s.num_samples)
    known = None if inputs is None else np.repeat(inputs / np.float32(255), s.num_samples, axis=0)
    num_chunks = math.ceil(total / chunk)
    pad = np.minimum(np.arange(num_chunks * chunk), total - 1)  # the last chunk repeats the last sample
    rng = jax.random.PRNGKey(config.seed)
    images = []
    for c in range(num_chunks):
        part = pad[c * chunk:(c + 1) * chunk]
        out = sample_fn(jax.random.fold_in(rng, c), variables, jnp.asarray(labels[part]) if label_classes else None,
                        None if known is None else jnp.asarray(known[part]))
        images.append(parallel.gather(out))
        logging.info("Sampled %d of %d.", min((c + 1) * chunk, total), total)
    images = np.concatenate(images)[:total]
    if not np.all(np.isfinite(images)):
        raise FloatingPointError(f"Sampling the checkpoint of step {step} gave non-finite values.")

    name = f"{s.task}_step{step}_{s.method}" + (f"_{s.guidance}_w{s.guidance_weight:g}" if s.guidance != "none" else "")
    folder = os.path.join(workdir, eval_folder)
    path = os.path.join(folder, name + ".npz")
    if jax.process_index() != 0:
        return path
    os.makedirs(folder, exist_ok=True)
    extra = {} if inputs is None else {"input": inputs, "input_index": input_index,
                                       "mask": np.zeros(0) if mask is None else mask}
    if s.task == "img2img":
        extra["strength"] = s.strength
    np.savez_compressed(path, image=datasets.to_uint8(images),
                        label=np.where(labels == label_classes, -1, labels) if label_classes else np.full(total, -1),
                        guidance=s.guidance, guidance_weight=s.guidance_weight, step=step, method=s.method, **extra)
    _write_grid(os.path.join(folder, name + ".png"), images, row_classes, config, step, inputs, input_index, mask)
    logging.info("Samples written to %s (.npz and .png).", os.path.join(folder, name))
    if s.task == "generate" and label_classes:
        _class_accuracy(config, workdir, os.path.join(folder, name + "_accuracy.json"), images, labels,
                        label_classes)
    return path


def _class_accuracy(config, workdir: str, path: str, images, labels, num_classes: int) -> None:
    """Write what the domain classifier makes of the samples to `path`, when one has been trained (--mode
    train_classifier): the histogram of its predicted classes and, for the class-conditional samples, the
    fraction of each class's samples it assigns to that class. Else only say how to get one."""
    if not os.path.isfile(os.path.join(classifier.classifier_dir(config, workdir), classifier.WEIGHTS_FILE)):
        logging.info("No domain classifier in %s: train one with --mode train_classifier to measure the samples' "
                     "per-class accuracy.", classifier.classifier_dir(config, workdir))
        return
    net = features.classifier_net(config, workdir)
    logits = features.compute_features(net, datasets.to_uint8(images), config.eval.batch_size)["logits"]
    predicted = np.argmax(logits, axis=-1)
    result = {"class_histogram": np.bincount(predicted, minlength=num_classes).tolist(),
              "classifier": net.description, "classifier_test_accuracy": net.test_accuracy,
              "num_samples": int(len(labels))}
    conditional = labels < num_classes  # the null label marks unconditional samples
    if np.any(conditional):
        hit = predicted == labels
        result["per_class_accuracy"] = {str(y): float(np.mean(hit[labels == y]))
                                        for y in range(num_classes) if np.any(labels == y)}
        result["accuracy"] = float(np.mean(hit[conditional]))
        logging.info("Domain classifier accuracy of the samples: %.3f (per class %s).", result["accuracy"],
                     result["per_class_accuracy"])
    else:
        logging.info("Classes the domain classifier assigns to the unconditional samples: %s.",
                     result["class_histogram"])
    atomic_write_json(path, result)


def _write_grid(path, images, row_classes, config, step, inputs, input_index, mask) -> None:
    s = config.sampling
    names = ["uncond" if y is None else str(y) for y in row_classes]
    caption = f"{s.task} {s.method} step {step}" + (f" strength {s.strength:g}" if s.task == "img2img" else "")
    caption += f" {s.guidance} w={s.guidance_weight:g}" if s.guidance != "none" else ""
    if inputs is None:
        save_labelled_grid(images, path, s.num_samples, names, caption)
        return
    shown = inputs / np.float32(255)  # the observation: known pixels (the rest mid-gray), gray level or block means
    if s.task == "inpaint":
        shown = np.where(mask[None, :, :, None] > 0, shown, 0.5)
    elif s.task == "colorize":
        shown = np.repeat(shown.mean(-1, keepdims=True), shown.shape[-1], -1)
    elif s.task == "superres":
        shown = conditions.lowres(shown, s.factor)
    rows = np.concatenate([shown[:, None], images.reshape(len(inputs), s.num_samples, *images.shape[1:])], axis=1)
    row_names = [("file" if i < 0 else f"#{i}") + ("" if y is None else f" y={y}")
                 for i, y in zip(input_index, row_classes)]
    save_labelled_grid(rows.reshape(-1, *images.shape[1:]), path, s.num_samples + 1, row_names, caption)
