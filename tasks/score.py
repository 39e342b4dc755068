"""The score model as a task of the training loop (training/loop.py), and its sampling for snapshots.

Train step: one optimizer step on the loss config.training.loss: the denoising score-matching loss of
losses.score_matching_loss ('dsm'), or the discrete VP chain's bound 'vlb' or 'hybrid' loss (losses/chain.py; with
vlb_sampling='importance' the step also appends its terms to the history in model_state), with the batch's class
labels (a fraction label_dropout of them replaced by the null label) for a class-conditional model; then the EMA
update ema <- r ema + (1 - r) params (training.state.apply_gradients, which also guards against NaN/inf). Eval step: the same loss of the EMA parameters. Snapshot: a grid of samples drawn with
config.sampling from the EMA parameters, under workdir/samples/.
"""
from __future__ import annotations

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
from training import parallel
from training.checkpoint import abstract_like
from training.loop import Schedule
from training.state import TrainState, apply_gradients, create_train_state, get_optimizer, learning_rate_schedule
from training.validation import validate_train_config
from training.writers import save_image_grid


def get_step_fn(sde, model, *, train: bool, optimizer: optax.GradientTransformation | None = None,
                scaler=lambda x: x, ema_rate: float = 0.9999, continuous: bool = True,
                reduce_mean: bool = False, likelihood_weighting: bool = False, eps: float = 1e-5,
                num_classes: int = 0, label_dropout: float = 0.0, loss: str = "dsm", vlb_sampling: str = "uniform",
                vlb_lambda: float = 1e-3):
    """step_fn(state, batch, frozen=None) on one batch {'image': (B, H, W, C) in [0, 1], 'label': (B,)}:
    train=True -> (state after one guarded optimizer + EMA step, loss or NaN when skipped);
    train=False -> the loss of the EMA parameters. `loss` is config.training.loss (module docstring)."""
    if train and optimizer is None:
        raise ValueError("get_step_fn(train=True) needs an optimizer.")
    # Now, not when the first step is traced.
    learned = models.has_learned_variance(model.config)
    chain.check_options(sde, loss, continuous, learned, vlb_sampling)
    losses.check_options(sde, continuous, likelihood_weighting)
    importance = vlb_sampling == "importance"

    def loss_fn(params, model_state, rng, x0, labels):
        """(loss, the vlb loss's (i, L_i) or None)."""
        dropout_rng, loss_rng = jax.random.split(rng)
        fn = models.get_score_fn(sde, model, {"params": params, **model_state}, train=train, continuous=continuous,
                                 rng=dropout_rng, labels=labels, with_variance=learned)
        if loss == "vlb":
            return chain.vlb_loss(loss_rng, fn, x0, sde, learned, model_state[chain.HISTORY] if importance else None)
        if loss == "hybrid":
            return chain.hybrid_loss(loss_rng, fn, x0, sde, vlb_lambda), None
        return losses.score_matching_loss(loss_rng, fn, x0, sde, continuous=continuous, reduce_mean=reduce_mean,
                                          likelihood_weighting=likelihood_weighting, eps=eps), None

    def step_fn(state: TrainState, batch, frozen=None):
        rng, step_rng, label_rng = jax.random.split(state.rng, 3)
        x0 = scaler(batch["image"])
        labels = batch["label"] if num_classes > 0 else None
        if not train:
            return loss_fn(state.ema_params, state.model_state, step_rng, x0, labels)[0]
        if labels is not None and label_dropout > 0:
            labels = losses.drop_labels(label_rng, labels, num_classes, label_dropout)
        (value, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, state.model_state, step_rng,
                                                                        x0, labels)
        state, value = apply_gradients(state, value, grads, optimizer, rng, ema_rate)
        if importance:
            history = chain.update_history(state.model_state[chain.HISTORY], aux, jnp.isfinite(value))
            state = state.replace(model_state={**state.model_state, chain.HISTORY: history})
        return state, value

    return step_fn


def step_fn_from_config(config, sde, model, *, train: bool, optimizer=None, scaler=lambda x: x):
    """get_step_fn with its options read from config.training / config.model."""
    t = config.training
    return get_step_fn(sde, model, train=train, optimizer=optimizer, scaler=scaler, ema_rate=config.model.ema_rate,
                       continuous=t.continuous, reduce_mean=t.reduce_mean, likelihood_weighting=t.likelihood_weighting,
                       num_classes=config.model.num_classes, label_dropout=t.label_dropout, loss=t.loss,
                       vlb_sampling=t.vlb_sampling, vlb_lambda=t.vlb_lambda)


def init_state(config, model, optimizer, seed_rng=None) -> TrainState:
    """The fresh train state of `model`: params from the first key of PRNGKey(config.seed), rng the second; with
    training.vlb_sampling='importance', the empty history of the vlb loss's terms in model_state."""
    init_rng, state_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed) if seed_rng is None else seed_rng, 3)
    variables = models.init_model(init_rng, config, model)
    if config.training.vlb_sampling == "importance":
        variables = {**variables, chain.HISTORY: chain.init_history(sde_lib.from_config(config))}
    return create_train_state(state_rng, variables, optimizer)


def restore_train_state(checkpointer, step: int, config, model, mesh) -> TrainState:
    """The train state of periodic checkpoint `step`, replicated on the mesh, for sampling and evaluation."""
    return checkpointer.restore(step, abstract_like(lambda: init_state(config, model, get_optimizer(config.optim)),
                                                    mesh))


def make_sample_fn(config, sde, model, num_samples: int, mesh, guide=None, observe=None):
    """jit(rng, variables, labels=None, known=None) -> samples in [0, 1], (num_samples, H, W, C), with the sampler
    of config.sampling.

    The output is sharded over the mesh's batch axis, and XLA partitions the whole
    sampling loop accordingly: each device integrates num_samples / devices samples.
    labels (num_samples,) gives each sample's class; by default a class-conditional model draws
    sample i from class i mod num_classes. guide(score_fn_for_labels, labels) -> score_fn applies guidance
    (samplers.guidance); by default the plain (conditional) score. A learned-variance model's variance (of the
    labels) goes to the samplers that take one (samplers.takes_variance). observe(known) -> LinearObservation makes
    the 'pc' sampler solve an inverse problem (samplers.inverse) for the images `known` in [0, 1].
    """
    d = config.data
    shape = (num_samples, d.image_size, d.image_size, d.num_channels)
    scaler, inverse_scaler = datasets.get_data_scaler(config), datasets.get_data_inverse_scaler(config)

    def get_sampler(known):
        return samplers.from_config(config, sde, shape, constraint=None if observe is None else observe(scaler(known)))

    get_sampler(None if observe is None else jnp.zeros(shape))  # reject a bad config before anything runs
    num_classes = config.model.num_classes
    default_labels = jnp.arange(num_samples) % num_classes if num_classes > 0 else None

    @functools.partial(jax.jit, out_shardings=parallel.batch_sharding(mesh))
    def sample(rng, variables, labels=default_labels, known=None):
        def score_fn_for_labels(y):
            return models.get_score_fn(sde, model, variables, train=False, continuous=config.training.continuous,
                                       labels=y)

        score_fn = score_fn_for_labels(labels) if guide is None else guide(score_fn_for_labels, labels)
        sampler = get_sampler(known)
        if models.has_learned_variance(config) and samplers.takes_variance(sampler):
            x, _ = sampler(rng, score_fn, models.get_variance_fn(sde, model, variables,
                                                                 continuous=config.training.continuous, labels=labels))
        else:
            x, _ = sampler(rng, score_fn)
        return jnp.clip(inverse_scaler(x), 0.0, 1.0)

    return sample


def write_samples(images, workdir: str, step: int, nrow: int | None = None) -> str:
    """Save a sample grid PNG (nrow images a row; and the images as uint8 npz) under workdir/samples/;
    returns the PNG path."""
    images = np.asarray(images)
    folder = os.path.join(workdir, "samples")
    path = os.path.join(folder, f"step_{step:08d}.png")
    save_image_grid(images, path, nrow=nrow)
    np.savez_compressed(os.path.join(folder, f"step_{step:08d}.npz"), image=datasets.to_uint8(images))
    return path


class ScoreTask:
    """A score network under config.training.sde, trained on config.data (see the module docstring)."""

    frozen, frozen_record, augment = None, {}, True

    def __init__(self, config, workdir: str):
        mesh = parallel.make_mesh()
        validate_train_config(config)
        parallel.check_divisible("training.snapshot_num_samples", config.training.snapshot_num_samples, mesh.size)
        self.config, self.workdir = config, workdir
        self.schedule = Schedule.from_config(config)
        self.sde = sde_lib.from_config(config)
        self.model = models.get_model(config)
        models.check_learned_variance(config, self.model)
        self.optimizer = get_optimizer(config.optim)
        self.learning_rate = learning_rate_schedule(config.optim)
        self.train_data, self.eval_data = datasets.get_dataset(config)
        scaler = datasets.get_data_scaler(config)
        self.train_step = step_fn_from_config(config, self.sde, self.model, train=True, optimizer=self.optimizer,
                                              scaler=scaler)
        self.eval_step = step_fn_from_config(config, self.sde, self.model, train=False, scaler=scaler)
        t = config.training
        self._sample_fn = make_sample_fn(config, self.sde, self.model, t.snapshot_num_samples, mesh) \
            if t.snapshot_sampling else None
        self._sample_rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)[2]

    def init_state(self) -> TrainState:
        return init_state(self.config, self.model, self.optimizer)

    def snapshot(self, state: TrainState, step: int) -> None:
        if self._sample_fn is None:
            return
        images = parallel.gather(self._sample_fn(jax.random.fold_in(self._sample_rng, step), state.ema_variables))
        if jax.process_index() == 0:
            path = write_samples(images, self.workdir, step, nrow=self.config.model.num_classes or None)
            logging.info("Step %d: samples written to %s", step, path)

    def finish(self, state: TrainState) -> None:
        """Nothing beyond the last periodic checkpoint and its grid."""

