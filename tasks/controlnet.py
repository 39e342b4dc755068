"""ControlNet as a task of the training loop: a trainable copy of a trained score U-Net's encoder steers the
frozen base through zero convolutions (models/controlnet.py), trained with the base's own denoising loss.

    base      the EMA parameters of the newest checkpoint of config.controlnet.base_workdir, a score model of a
              kind in controlnet.BASES ('unet2d_condition', 'ddpm', 'ncsnpp'): the loop's `frozen`, recorded as
              {base_workdir, step, digest}, never re-saved
    c         = condition(x_0), computed from each batch's images on the fly (data_sources/conditions.py,
              config.controlnet.condition), in [0, 1]^(H, W, C_c)
    s_phi(x_t, t | c) = s_base(x_t, t; control = ControlNet_phi(x_t, t, c))       (phi: the ControlNet only)
    L(phi)    the base's score-matching loss of s_phi (tasks/score.get_step_fn, with the base's options)
    y         a class-conditional base's batch labels, given to both networks, a fraction training.label_dropout
              of them replaced by the null label as the base was trained (the score step's dropout), so that
              the ControlNet also learns s_phi(x_t, t | null, c), the unconditional branch of classifier-free
              guidance
    w         a text-conditioned base's (config.text.conditional) batch captions: the context T(w) of the base's
              text tower T (trained with it, or the CLIP tower it used), computed once per step and given to both
              networks, s_phi(x_t, t | w, c) = s_base(x_t, t, T(w); control = ControlNet_phi(x_t, t, T(w), c)),
              a fraction training.label_dropout of the captions replaced by the empty prompt as for y; T is
              frozen with the base (in the loop's `frozen`, recorded as the base's 'text' tower), and the
              ControlNet's params are kept as {'controlnet': phi} beside it (models/prompt.py)

At phi's initialisation (controlnet.from_base) every zero conv is zero, so s_phi = s_base exactly. A snapshot
samples the conditions of snapshot_num_samples test images spread evenly over the split (a split sorted by class
gives every class; with their captions on a text base, listed in a .txt beside the grid), writes each condition
beside its sample (workdir/samples/), and appends the edge agreement F1(Canny(sample), Canny(x_0)) to
workdir/edge_f1.json: with a 1-pixel tolerance, exact, and exact against a shuffled x_0 (the chance level of these
samples), so the training curve shows when the samples start to follow their conditions. A base of
another architecture or image size is refused in one line before anything is written, as is a text base whose
checkpoint was trained with another tower than config.text names; a ControlNet checkpoint of another base (or
text tower) is refused by the loop (its frozen record).
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import datasets
import models
import sde_lib
from data_sources import conditions
from data_sources.preprocess import ImageFormat
from models import controlnet
from models.prompt import PromptConditioning
from tasks import score, text
from training import parallel
from training.checkpoint import CheckpointMismatchError, Checkpointer, abstract_like, leaf_checksums
from training.files import atomic_write_json, atomic_write_text, tree_digest
from training.loop import Schedule
from training.state import TrainState, create_train_state, get_optimizer, learning_rate_schedule
from training.validation import ConfigError, validate_train_config
from training.writers import save_image_grid


@dataclasses.dataclass(frozen=True)
class Base:
    """The frozen base: its network, EMA variables and the record naming them (run path, step, digest); for a
    text-conditioned base also its tokenizer, its text tower's params {'text_model': ...} and the ControlNet's
    PromptConditioning on that tower (frozen, the ControlNet's params under 'controlnet')."""

    model: Any
    variables: dict
    record: dict
    tokenizer: Any = None
    tower: dict | None = None
    prompt: PromptConditioning | None = None

    @property
    def frozen(self) -> dict:
        """The loop's frozen parameters: {'base': variables, ['text_model': the tower's params]}."""
        return {"base": self.variables, **(self.tower or {})}

    def controlnet_variables(self, params) -> dict:
        """A ControlNet's train-state variables: {'params': params}, on a text base {'params': {'controlnet':
        params}}."""
        return {"params": params} if self.prompt is None else self.prompt.init(None, {"params": params})


def _check_geometry(config, folder: str) -> None:
    """The base's sample grids (workdir/samples/*.npz) say the image size and channels it was trained at."""
    found = sorted(glob.glob(os.path.join(folder, "samples", "step_*.npz")))
    if not found:
        logging.warning("The base run %s has no sample grids, so its image size cannot be checked.", folder)
        return
    with np.load(found[-1]) as f:
        shape = tuple(f["image"].shape[1:])
    d = config.data
    if shape != (d.image_size, d.image_size, d.num_channels):
        raise ConfigError(f"The base run {folder} was trained on {shape[0]}x{shape[1]}x{shape[2]} images, this "
                          f"config on {d.image_size}x{d.image_size}x{d.num_channels} (config.data); give the base's "
                          f"config.data and config.model.")


def open_base(config, mesh) -> Base:
    """The base of config.controlnet.base_workdir (see the module docstring), with its text tower and tokenizer
    when config.text.conditional; ConfigError in one line if it is missing, not of a kind in controlnet.BASES, of
    another architecture or image size than config.model / config.data, or trained with another text tower."""
    folder = config.controlnet.base_workdir
    if not folder:
        raise ConfigError("config.controlnet.base_workdir is empty; name the --workdir of a trained score model "
                          "(e.g. configs/controlnet/unet_digits_base.py).")
    if config.model.name not in controlnet.BASES:
        raise ConfigError(f"config.model.name={config.model.name!r}: a ControlNet copies the encoder of a base of "
                          f"{sorted(controlnet.BASES)}; give the base run's config.model.")
    folder = os.path.abspath(folder)
    if not os.path.isdir(os.path.join(folder, "checkpoints")):
        raise ConfigError(f"No checkpoints in config.controlnet.base_workdir={folder}; train the base there first "
                          f"(--mode train with its config).")
    _check_geometry(config, folder)
    model = models.get_model(config)
    tokenizer, prompt, tower, text_record = (text.prompt_conditioning(config, folder) if config.text.conditional
                                             else (None, None, None, {}))
    like = abstract_like(lambda: score.init_state(config, model, get_optimizer(config.optim), prompt=prompt), mesh)
    try:
        with Checkpointer(folder) as checkpointer:
            restored = checkpointer.latest(like)
    except CheckpointMismatchError as e:
        raise ConfigError(f"The base run {folder} is not the network of this config: {e}") from None
    if restored is None:
        raise ConfigError(f"No checkpoint in config.controlnet.base_workdir={folder}; train the base first.")
    params, record = restored.state.ema_params, {"base_workdir": folder, "step": restored.step}
    if prompt is not None:
        if restored.meta.get("frozen", {}) != text_record:
            raise ConfigError(f"The base run {folder} was trained with the text tower {restored.meta.get('frozen')} "
                              f"but config.text gives {text_record or 'one trained with the base'}; give the base's "
                              f"config.text.pretrained_dir.")
        tower = tower or {"text_model": params["text_model"]}
        record["text"] = text_record or {"text_tower": folder, "step": restored.step, "digest": tree_digest(tower)}
        params, prompt = params["unet"], dataclasses.replace(prompt, joint=False, network="controlnet")
    variables = {"params": params, **restored.state.model_state}
    record["digest"] = hashlib.sha256(json.dumps(leaf_checksums(variables)).encode()).hexdigest()[:16]
    return Base(model, variables, record, tokenizer, tower, prompt)


def condition_channels(config) -> int:
    """C_c: one for the edge / mask kinds, the data's channels for user-given images."""
    return config.data.num_channels if config.controlnet.condition == "folder" else 1


def condition_fn(config, data: datasets.Dataset) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """fn(images in [0, 1], their indices in `data`) -> conditions (N, H, W, C_c) in [0, 1]."""
    c = config.controlnet
    if c.condition not in conditions.KINDS:
        raise ConfigError(f"config.controlnet.condition={c.condition!r} must be one of {list(conditions.KINDS)}.")
    if c.condition != "folder":
        return lambda images, indices: conditions.compute(c.condition, images, c.canny_sigma, c.scribble_radius,
                                                          c.mask_threshold)
    paths = getattr(data.source, "paths", None)
    if paths is None or not c.condition_dir:
        raise ConfigError("config.controlnet.condition='folder' pairs config.controlnet.condition_dir's images with "
                          "the data's file names: set it and config.data.dataset='folder'.")
    if config.data.random_flip:
        raise ConfigError("config.controlnet.condition='folder' cannot follow random flips of the images; set "
                          "config.data.random_flip=False.")
    fmt = ImageFormat(config.data.image_size, config.data.num_channels)
    return lambda images, indices: conditions.paired_conditions(c.condition_dir, [paths[i] for i in indices],
                                                                fmt) / np.float32(255)


def build(config, base: Base, seed_rng=None):
    """(the controlled network `Controlled(base, ControlNet)`, the ControlNet's fresh params from_base)."""
    c = config.controlnet
    rng = jax.random.split(jax.random.PRNGKey(config.seed) if seed_rng is None else seed_rng, 3)[0]
    cn_model, params = controlnet.from_base(config, base.variables["params"], rng, condition_channels(config),
                                            tuple(c.embedding_channels))
    return controlnet.Controlled(base.model, cn_model), params


def edge_agreement(samples: np.ndarray, images: np.ndarray, sigma: float) -> dict:
    """Mean F1 of the samples' Canny edges against the images': {'1px': 1-pixel tolerance, 'exact', 'shuffled':
    exact against the images rolled by one (another image's edges: chance)}."""
    predicted, reference = conditions.canny(samples, sigma), conditions.canny(images, sigma)

    def f1(ref, tolerance):
        return float(np.mean(conditions.edge_f1(predicted, ref, tolerance)))

    return {"1px": f1(reference, 1), "exact": f1(reference, 0), "shuffled": f1(np.roll(reference, 1, axis=0), 0)}


def beside(condition: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Images interleaved (condition_0, sample_0, condition_1, ...), the condition gray in the samples' channels."""
    cond = np.broadcast_to(np.asarray(condition).mean(-1, keepdims=True), samples.shape)
    return np.stack([cond, samples], axis=1).reshape(-1, *samples.shape[1:])


class ControlNetTask:
    """A ControlNet trained on a frozen base score model (see the module docstring)."""

    augment = True

    def __init__(self, config, workdir: str):
        mesh = parallel.make_mesh()
        validate_train_config(config)
        t = config.training
        parallel.check_divisible("training.snapshot_num_samples", t.snapshot_num_samples, mesh.size)
        self.config, self.workdir = config, workdir
        self.schedule = Schedule.from_config(config)
        self.sde = sde_lib.from_config(config)
        train, test = datasets.get_dataset(config)
        self.base = base = open_base(config, mesh)
        if base.prompt is not None:  # captions reach the steps as the base's token ids
            if getattr(train.source, "captions", None) is None:
                raise ConfigError(f"A ControlNet on a text-conditioned base needs captioned images; "
                                  f"config.data.dataset={config.data.dataset!r} has none; give the base's config.data.")
            train, test = (dataclasses.replace(d, tokenizer=base.tokenizer) for d in (train, test))
        self.train_data = datasets.ConditionedData(train, condition_fn(config, train))
        self.eval_data = datasets.ConditionedData(test, condition_fn(config, test))
        self.frozen, self.frozen_record = base.frozen, base.record
        self.model, self._params = build(config, base)
        self.optimizer = get_optimizer(config.optim)
        self.learning_rate = learning_rate_schedule(config.optim)
        scaler = datasets.get_data_scaler(config)
        given = lambda batch, frozen: {"hint": batch["condition"], "base": frozen["base"]}  # noqa: E731
        self.train_step = score.step_fn_from_config(config, self.sde, self.model, train=True,
                                                    optimizer=self.optimizer, scaler=scaler, conditions=given,
                                                    prompt=base.prompt)
        self.eval_step = score.step_fn_from_config(config, self.sde, self.model, train=False, scaler=scaler,
                                                   conditions=given, prompt=base.prompt)
        self._sample_fn = None
        if t.snapshot_sampling:
            indices = np.arange(t.snapshot_num_samples) * len(test) // t.snapshot_num_samples
            self._images = test.source.read(indices)[0] / np.float32(255)
            self._condition = self.eval_data.condition(self._images, indices)
            self._prompts = None if base.prompt is None else [str(c) for c in test.source.captions[indices]]
            self._sample_fn = score.make_sample_fn(config, self.sde, self.model, t.snapshot_num_samples, mesh,
                                                   prompt=base.prompt)
            self._sample_rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)[2]

    def init_state(self) -> TrainState:
        state_rng = jax.random.split(jax.random.PRNGKey(self.config.seed), 3)[1]
        return create_train_state(state_rng, self.base.controlnet_variables(self._params), self.optimizer)

    def snapshot(self, state: TrainState, step: int) -> None:
        if self._sample_fn is None:
            return
        variables = PromptConditioning.variables({"params": state.ema_params}, self.base.tower)
        tokens = {} if self._prompts is None else {"labels": jnp.asarray(self.base.tokenizer(self._prompts))}
        samples = parallel.gather(self._sample_fn(jax.random.fold_in(self._sample_rng, step), variables,
                                                  hint=jnp.asarray(self._condition), base=self.base.variables,
                                                  **tokens))
        if jax.process_index() != 0:
            return
        f1 = edge_agreement(samples, self._images, self.config.controlnet.canny_sigma)
        folder = os.path.join(self.workdir, "samples")
        path = os.path.join(folder, f"step_{step:08d}.png")
        save_image_grid(beside(self._condition, samples), path, nrow=8)
        if self._prompts is not None:
            atomic_write_text(path[:-4] + ".txt", "\n".join(self._prompts) + "\n")
        np.savez_compressed(os.path.join(folder, f"step_{step:08d}.npz"), image=datasets.to_uint8(samples),
                            condition=datasets.to_uint8(self._condition))
        _record_edge_f1(self.workdir, step, f1)
        logging.info("Step %d: edge F1 %.3f (exact %.3f, against shuffled conditions %.3f); conditions and samples "
                     "written to %s", step, f1["1px"], f1["exact"], f1["shuffled"], path)

    def finish(self, state: TrainState) -> None:
        """Nothing beyond the last periodic checkpoint and its grid."""


def _record_edge_f1(workdir: str, step: int, f1: dict) -> None:
    """workdir/edge_f1.json: {step: edge_agreement} of every snapshot so far (a rerun's step replaces the old one)."""
    path = os.path.join(workdir, "edge_f1.json")
    history = {}
    if os.path.isfile(path):
        with open(path) as f:
            history = {int(k): v for k, v in json.load(f).items() if int(k) < step}
    atomic_write_json(path, {str(k): v for k, v in sorted({**history, step: f1}.items())})
