"""The score model as a task of the training loop (training/loop.py), and its sampling for snapshots.

Train step: one optimizer step on the loss config.training.loss: the denoising score-matching loss of
losses.score_matching_loss ('dsm'; 'edm' at EDM's log-normal noise levels, with its weights), or the discrete VP
chain's bound 'vlb' or 'hybrid' loss (losses/chain.py; with vlb_sampling='importance' the step also appends its
terms to the history in model_state); with the batch's class labels, a fraction label_dropout of them replaced
by the null label, for a class-conditional model; or with the context of the batch's captions, a fraction
label_dropout of them replaced by the empty prompt, for a text-conditioned one (config.text.conditional:
models/prompt.py, tasks/text.py). Then the EMA update
ema <- r ema + (1 - r) params (training.state.apply_gradients, which also guards against NaN/inf). Eval step: the
same loss of the EMA parameters. Snapshot: a grid of samples drawn with config.sampling from the EMA parameters,
under workdir/samples/ (for a text-conditioned model, one per test caption, the captions listed in a .txt beside
the grid).

With concat conditioning (config.concat.kind, tasks/concat.py) each batch also holds its examples' condition
images, which the network takes as extra input channels (a fraction config.concat.dropout of them the null
image), and a snapshot samples the conditions of the first test images: its grid shows, a row each, condition |
sample | the test image it was made from (the npz holds image, condition and reference).

In latent space (config.latent.autoencoder_dir names an autoencoder run, tasks/latent.py): x_0 = s E(2x - 1) is
encoded on the fly by the frozen encoder (the loop's `frozen`, recorded with the run's path, step and digest),
the network works on (h, w, c) latents (tasks.latent.score_config), and snapshot samples are decoded to pixels.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

import datasets
import losses
import models
from losses import chain
import samplers
import sde_lib
from tasks import concat, latent, text
from training import parallel
from training.checkpoint import abstract_like
from training.files import atomic_write_text
from training.loop import Schedule
from training.progress import EvaluationProgress
from training.state import TrainState, apply_gradients, create_train_state, get_optimizer, learning_rate_schedule
from training.validation import ConfigError, validate_train_config
from training.writers import condition_rows, save_image_grid


def get_step_fn(sde, model, *, train: bool, optimizer: optax.GradientTransformation | None = None,
                scaler=lambda x: x, ema_rate: float = 0.9999, ema_warmup: bool = False, continuous: bool = True,
                reduce_mean: bool = False, likelihood_weighting: bool = False, eps: float = 1e-5,
                num_classes: int = 0, label_dropout: float = 0.0, encode=None, conditions=None, prompt=None,
                loss: str = "dsm", vlb_sampling: str = "uniform", vlb_lambda: float = 1e-3,
                edm_levels: losses.EDMLevels = losses.EDMLevels(), concat_dropout: float = 0.0):
    """step_fn(state, batch, frozen=None) on one batch {'image': (B, H, W, C) in [0, 1], 'label': (B,)} (and
    'tokens' (B, L) for a text-conditioned model, `prompt` a models.prompt.PromptConditioning):
    train=True -> (state after one guarded optimizer + EMA step, loss or NaN when skipped);
    train=False -> the loss of the EMA parameters. x_0 = scaler(image), or encode(image, frozen) when given
    (a latent model's frozen encoder); conditions(batch, frozen) -> the network's further inputs the score
    function closes over (get_score_fn's keywords: a ControlNet's hint and frozen base; a concat condition image,
    of which a fraction concat_dropout is replaced by the null image 0 in training). `loss` is
    config.training.loss (module docstring); edm_levels are its 'edm' noise levels and weights."""
    if train and optimizer is None:
        raise ValueError("get_step_fn(train=True) needs an optimizer.")
    # Now, not when the first step is traced.
    learned = models.has_learned_variance(model.config)
    chain.check_options(sde, loss, continuous, learned, vlb_sampling)
    edm = edm_levels if loss == "edm" else None
    losses.check_options(sde, continuous, likelihood_weighting, edm)
    importance = vlb_sampling == "importance"

    def loss_fn(params, model_state, rng, x0, condition, given, frozen):
        """(loss, the vlb loss's (i, L_i) or None)."""
        dropout_rng, loss_rng = jax.random.split(rng)
        if prompt is None:
            given = {"labels": condition, **given}
        else:  # the text tower's gradient flows only when it is trained jointly (in params, not in frozen)
            params, context = prompt.split({**params, **(frozen or {})}, condition)
            given = {"context": context, **given}
        fn = models.get_score_fn(sde, model, {"params": params, **model_state}, train=train, continuous=continuous,
                                 rng=dropout_rng, with_variance=learned, **given)
        if loss == "vlb":
            return chain.vlb_loss(loss_rng, fn, x0, sde, learned, model_state[chain.HISTORY] if importance else None)
        if loss == "hybrid":
            return chain.hybrid_loss(loss_rng, fn, x0, sde, vlb_lambda), None
        return losses.score_matching_loss(loss_rng, fn, x0, sde, continuous=continuous, reduce_mean=reduce_mean,
                                          likelihood_weighting=likelihood_weighting, eps=eps, edm=edm), None

    def step_fn(state: TrainState, batch, frozen=None):
        rng, step_rng, label_rng = jax.random.split(state.rng, 3)
        x0 = scaler(batch["image"]) if encode is None else encode(batch["image"], frozen)
        if prompt is not None:
            condition, null = batch["tokens"], prompt.empty_tokens
        else:
            condition, null = (batch["label"] if num_classes > 0 else None), num_classes
        given = {} if conditions is None else conditions(batch, frozen)
        if not train:
            return loss_fn(state.ema_params, state.model_state, step_rng, x0, condition, given, frozen)[0]
        if condition is not None and label_dropout > 0:
            condition = losses.drop_labels(label_rng, condition, null, label_dropout)
        if given.get("concat") is not None and concat_dropout > 0:
            given = {**given, "concat": losses.drop_labels(jax.random.fold_in(label_rng, 1), given["concat"], 0.0,
                                                           concat_dropout)}
        (value, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, state.model_state, step_rng,
                                                                        x0, condition, given, frozen)
        state, value = apply_gradients(state, value, grads, optimizer, rng, ema_rate, ema_warmup)
        if importance:
            history = chain.update_history(state.model_state[chain.HISTORY], aux, jnp.isfinite(value))
            state = state.replace(model_state={**state.model_state, chain.HISTORY: history})
        return state, value

    return step_fn


def step_fn_from_config(config, sde, model, *, train: bool, optimizer=None, scaler=lambda x: x, encode=None,
                        conditions=None, prompt=None):
    """get_step_fn with its options read from config.training / config.model."""
    t = config.training
    return get_step_fn(sde, model, train=train, optimizer=optimizer, scaler=scaler, ema_rate=config.model.ema_rate,
                       ema_warmup=config.model.ema_warmup,
                       continuous=t.continuous, reduce_mean=t.reduce_mean, likelihood_weighting=t.likelihood_weighting,
                       num_classes=config.model.num_classes, label_dropout=t.label_dropout, encode=encode,
                       conditions=conditions, prompt=prompt, loss=t.loss, vlb_sampling=t.vlb_sampling,
                       vlb_lambda=t.vlb_lambda, concat_dropout=config.concat.dropout,
                       edm_levels=losses.EDMLevels(t.edm_p_mean, t.edm_p_std, config.model.sigma_data))


def init_state(config, model, optimizer, seed_rng=None, prompt=None) -> TrainState:
    """The fresh train state of `model` (with `prompt`'s text tower when it is trained jointly): params from
    the first key of PRNGKey(config.seed), rng the second; with training.vlb_sampling='importance', the empty
    history of the vlb loss's terms in model_state. A concat-conditioned model's input conv sees its condition's
    channels (tasks.concat.init_inputs)."""
    init_rng, state_rng, text_rng = jax.random.split(jax.random.PRNGKey(config.seed) if seed_rng is None
                                                     else seed_rng, 3)
    variables = models.init_model(init_rng, config, model, **concat.init_inputs(config))
    variables = variables if prompt is None else prompt.init(text_rng, variables)
    if config.training.vlb_sampling == "importance":
        variables = {**variables, chain.HISTORY: chain.init_history(sde_lib.from_config(config))}
    return create_train_state(state_rng, variables, optimizer)


def restore_train_state(checkpointer, step: int, config, model, mesh, prompt=None) -> TrainState:
    """The train state of periodic checkpoint `step`, replicated on the mesh, for sampling and evaluation."""
    return checkpointer.restore(step, abstract_like(
        lambda: init_state(config, model, get_optimizer(config.optim), prompt=prompt), mesh))


def make_sample_fn(config, sde, model, num_samples: int, mesh, guide=None, observe=None, decode=None, prompt=None,
                   strength=None):
    """fn(rng, variables, labels=None, known=None, **conditions) -> samples in [0, 1], (num_samples, H, W, C),
    with the sampler of config.sampling, one compiled program shown by a bar of its network evaluations
    (training.progress); `conditions` are the network's further inputs (get_score_fn's): a concat condition
    image `concat` pairs with the labels, (labels, concat), as the condition guidance sees (its null image 0);
    decode(x) -> images in [0, 1] maps a latent model's samples to pixels (by default x is mapped back by the
    data inverse scaler and clipped). With `prompt` (models.prompt) the labels are token ids (num_samples, L)
    and variables' params hold the text tower too (a frozen one merged in).

    The output is sharded over the mesh's batch axis, and XLA partitions the whole
    sampling loop accordingly: each device integrates num_samples / devices samples.
    labels (num_samples,) gives each sample's class; by default a class-conditional model draws
    sample i from class i mod num_classes. guide(score_fn_for_labels, labels) -> score_fn applies guidance
    (samplers.guidance); by default the plain (conditional) score. observe(known) -> LinearObservation makes
    the 'pc' sampler solve an inverse problem (samplers.inverse) for the images `known` in [0, 1]; with
    `strength` s the sampler instead restarts from `known` perturbed to time s T (img2img: sde_lib.Restarted),
    a nonzero config.sampling.num_steps scaled to round(s num_steps) as diffusers' img2img does.
    """
    d = config.data
    shape = (num_samples, d.image_size, d.image_size, d.num_channels)
    scaler, inverse_scaler = datasets.get_data_scaler(config), datasets.get_data_inverse_scaler(config)

    sampling_config = config
    if strength is not None and config.sampling.num_steps:
        sampling_config = copy.deepcopy(config)
        sampling_config.sampling.num_steps = max(1, round(strength * config.sampling.num_steps))

    def get_sampler(known):
        if strength is not None:
            return samplers.from_config(sampling_config, sde_lib.Restarted(sde, strength, scaler(known)), shape)
        return samplers.from_config(config, sde, shape, constraint=None if observe is None else observe(scaler(known)))

    get_sampler(None if observe is None and strength is None else jnp.zeros(shape))  # reject a bad config now
    num_classes = config.model.num_classes
    default_labels = jnp.arange(num_samples) % num_classes if num_classes > 0 else None
    progress = EvaluationProgress("sample")

    @functools.partial(jax.jit, out_shardings=parallel.batch_sharding(mesh))
    def sample(rng, variables, labels=default_labels, known=None, **conditions):
        image = conditions.pop("concat", None)

        def network_inputs(y):
            """(variables, get_score_fn's keyword inputs) for the condition y: class labels or a prompt's ids,
            paired with a concat condition image when one is given."""
            y, given = (y, conditions) if image is None else (y[0], {"concat": y[1], **conditions})
            if prompt is None:
                return variables, {"labels": y, **given}
            params, context = prompt.split(variables["params"], y)
            return {**variables, "params": params}, {"context": context, **given}

        def score_fn_for_labels(y):
            net_variables, inputs = network_inputs(y)
            return models.get_score_fn(sde, model, net_variables, train=False, continuous=config.training.continuous,
                                       **inputs)

        condition = labels if image is None else (labels, image)
        score_fn = progress.count(score_fn_for_labels(condition) if guide is None
                                  else guide(score_fn_for_labels, condition))
        sampler = get_sampler(known)
        if models.has_learned_variance(config) and samplers.takes_variance(sampler):
            net_variables, inputs = network_inputs(condition)
            x, _ = sampler(rng, score_fn, models.get_variance_fn(sde, model, net_variables,
                                                                 continuous=config.training.continuous, **inputs))
        else:
            x, _ = sampler(rng, score_fn)
        return jnp.clip(inverse_scaler(x), 0.0, 1.0) if decode is None else decode(x)

    return functools.wraps(sample)(functools.partial(progress.run, sample))


def write_samples(images, workdir: str, step: int, nrow: int | None = None, grid=None, **arrays) -> str:
    """Save a sample grid PNG (of `grid`, by default the images; nrow images a row) and the images (and `arrays`)
    as uint8 npz under workdir/samples/; returns the PNG path."""
    images = np.asarray(images)
    folder = os.path.join(workdir, "samples")
    path = os.path.join(folder, f"step_{step:08d}.png")
    save_image_grid(images if grid is None else grid, path, nrow=nrow)
    np.savez_compressed(os.path.join(folder, f"step_{step:08d}.npz"), image=datasets.to_uint8(images),
                        **{name: datasets.to_uint8(value) for name, value in arrays.items()})
    return path


class ScoreTask:
    """A score network under config.training.sde, trained on config.data (see the module docstring)."""

    augment = True

    def __init__(self, config, workdir: str):
        mesh = parallel.make_mesh()
        space = latent.score_space(config)
        self.net_config = space.net_config
        validate_train_config(self.net_config)
        parallel.check_divisible("training.snapshot_num_samples", config.training.snapshot_num_samples, mesh.size)
        self.config, self.workdir = config, workdir
        self.schedule = Schedule.from_config(config)
        self.sde = sde_lib.from_config(config)
        self.model = models.get_model(self.net_config)
        models.check_learned_variance(self.net_config, self.model)
        self.optimizer = get_optimizer(config.optim)
        self.learning_rate = learning_rate_schedule(config.optim)
        self.train_data, self.eval_data = datasets.get_dataset(config)
        if space.latents is not None:
            logging.info("Latent score model on %s latents of %s (scale %.4g).", space.latents.shape,
                         space.latents.folder, space.latents.scale)
        t = config.training
        self.prompt = self._prompts = None
        text_frozen, text_record = None, {}
        if config.text.conditional:  # captions reach the steps as token ids, the snapshot draws test captions
            captions = getattr(self.train_data.source, "captions", None)
            if captions is None:
                raise ConfigError(f"config.text.conditional needs captioned images; config.data.dataset="
                                  f"{config.data.dataset!r} has none ('mnist_pairs', 'caption_folder', "
                                  f"'caption_table' have).")
            self.tokenizer, self.prompt, text_frozen, text_record = text.prompt_conditioning(config, workdir, captions)
            self.train_data, self.eval_data = (dataclasses.replace(d, tokenizer=self.tokenizer)
                                               for d in (self.train_data, self.eval_data))
            self._prompts = list(self.eval_data.source.captions[:t.snapshot_num_samples])
        # the loop's frozen parameters: a latent model's autoencoder and/or a frozen text tower, each recorded
        self.frozen = {**(space.frozen or {}), **(text_frozen or {})} or None
        self.frozen_record = ({"latent": space.record, "text": text_record} if space.record and text_record
                              else space.record or text_record)
        given = None
        if concat.enabled(config):  # batches hold their condition images, the snapshot the test images'
            concat.validate(config)
            condition_fn = concat.condition_fn(config)
            self.train_data, self.eval_data = (datasets.ConditionedData(d, condition_fn)
                                               for d in (self.train_data, self.eval_data))
            given = concat.network_inputs(self.net_config)
            indices = np.arange(t.snapshot_num_samples) % len(self.eval_data.data)
            self._reference = self.eval_data.data.source.read(indices)[0] / np.float32(255)
            self._condition = condition_fn(self._reference, indices)
        scaler = datasets.get_data_scaler(config)
        self.train_step = step_fn_from_config(config, self.sde, self.model, train=True, optimizer=self.optimizer,
                                              scaler=scaler, encode=space.encode, conditions=given, prompt=self.prompt)
        self.eval_step = step_fn_from_config(config, self.sde, self.model, train=False, scaler=scaler,
                                             encode=space.encode, conditions=given, prompt=self.prompt)
        self._sample_fn = make_sample_fn(self.net_config, self.sde, self.model, t.snapshot_num_samples, mesh,
                                         decode=space.decode, prompt=self.prompt) if t.snapshot_sampling else None
        self._sample_rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)[2]

    def init_state(self) -> TrainState:
        return init_state(self.net_config, self.model, self.optimizer, prompt=self.prompt)

    def snapshot(self, state: TrainState, step: int) -> None:
        if self._sample_fn is None:
            return
        rng = jax.random.fold_in(self._sample_rng, step)
        if concat.enabled(self.config):
            self._concat_snapshot(rng, state, step)
            return
        if self.prompt is None:
            images = parallel.gather(self._sample_fn(rng, state.ema_variables))
        else:
            variables = self.prompt.variables(state.ema_variables, self.frozen)
            images = parallel.gather(self._sample_fn(rng, variables, jnp.asarray(self.tokenizer(self._prompts))))
        if jax.process_index() == 0:
            path = write_samples(images, self.workdir, step, nrow=self.config.model.num_classes or None)
            if self._prompts:
                atomic_write_text(path[:-4] + ".txt", "\n".join(self._prompts) + "\n")
            logging.info("Step %d: samples written to %s", step, path)

    def _concat_snapshot(self, rng, state: TrainState, step: int) -> None:
        """Samples of the test images' conditions (a text model's with their captions, a class-conditional one's
        with classes i mod num_classes); grid rows condition | sample | reference."""
        given = {"concat": concat.to_denoiser(self._condition, self.net_config)}
        if self.prompt is None:
            images = parallel.gather(self._sample_fn(rng, state.ema_variables, **given))
        else:
            images = parallel.gather(self._sample_fn(rng, self.prompt.variables(state.ema_variables, self.frozen),
                                                     jnp.asarray(self.tokenizer(self._prompts)), **given))
        if jax.process_index() == 0:
            grid = condition_rows(concat.shown(self.config, self._condition), images, self._reference)
            path = write_samples(images, self.workdir, step, nrow=12, grid=grid, condition=self._condition,
                                 reference=self._reference)
            logging.info("Step %d: conditions, samples and references written to %s", step, path)

    def finish(self, state: TrainState) -> None:
        """Nothing beyond the last periodic checkpoint and its grid."""
