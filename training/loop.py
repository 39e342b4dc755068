"""`--mode train`: the training loop.

Each compiled call runs config.training.n_jitted_steps optimizer steps on a
batch sharded over the device mesh; the host only waits on the device at log
intervals and checkpoints. Checkpoints: periodic ones every snapshot_freq
steps (with a sample grid), and one pre-emption checkpoint every
snapshot_freq_for_preemption steps and on SIGTERM (replaced).

A run killed at any moment and rerun with the same command ends with the
same parameters, bit for bit on CPU, and logs the same losses: it resumes from
the newest usable checkpoint, which holds the whole train state (rng
included) and the open log window; the data order and eval batches are
functions of the step; a NaN/inf step is caught before any checkpoint holds it
(training/guard.py).
"""
from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

import datasets
import losses
import models
import samplers
import sde_lib
from training import parallel
from training.checkpoint import Checkpointer
from training.guard import LossWindow, NonFiniteLossError  # noqa: F401 - NonFiniteLossError is part of this API
from training.preemption import Preempted, StopRequests
from training.validation import validate_train_config
from training.writers import MetricWriter, save_image_grid


def fuse_steps(step_fn, donate: bool, name: str = "fused_steps"):
    """One compiled call running step_fn over batches with a leading steps axis -> (state, per-step losses).

    The steps are unrolled at trace time (a fully unrolled lax.scan): XLA:CPU runs
    a while-loop body about 7x slower than the same straight-line code (measured
    on the digits config), and lax.scan keeps the loop even for one step. The
    cost is compile time linear in n_jitted_steps.
    """
    def run(state, batches):
        step_losses = []
        for k in range(jax.tree_util.tree_leaves(batches)[0].shape[0]):
            state, loss = step_fn(state, jax.tree_util.tree_map(lambda x: x[k], batches))
            step_losses.append(loss)
        return state, jnp.stack(step_losses)
    run.__name__ = name  # names the compiled program in JAX's logs
    return jax.jit(run, donate_argnums=(0,) if donate else ())


def make_sample_fn(config, sde, model, num_samples: int, mesh, guide=None, observe=None):
    """jit(rng, variables, labels=None, known=None) -> samples in [0, 1], (num_samples, H, W, C), with the sampler
    of config.sampling.

    The output is sharded over the mesh's batch axis, and XLA partitions the whole
    sampling loop accordingly: each device integrates num_samples / devices samples.
    labels (num_samples,) gives each sample's class; by default a class-conditional model draws
    sample i from class i mod num_classes. guide(score_fn_for_labels, labels) -> score_fn applies guidance
    (samplers.guidance); by default the plain (conditional) score. observe(known) -> LinearObservation makes
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
        x, _ = get_sampler(known)(rng, score_fn)
        return jnp.clip(inverse_scaler(x), 0.0, 1.0)

    return sample


def write_samples(images, workdir: str, step: int, nrow: int | None = None) -> str:
    """Save a sample grid PNG (nrow images a row; and the images as uint8 npz) under workdir/samples/;
    returns the PNG path."""
    images = np.asarray(images)
    folder = os.path.join(workdir, "samples")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"step_{step:08d}.png")
    save_image_grid(images, path, nrow=nrow)
    np.savez_compressed(os.path.join(folder, f"step_{step:08d}.npz"),
                        image=np.round(images * 255).astype(np.uint8))
    return path


def restore_or_init(checkpointer: Checkpointer, make_state, mesh):
    """(state on the mesh, Restored or None): the newest usable checkpoint, else make_state().

    The restore target is traced with jax.eval_shape, so a resumed run never initializes a model
    (eagerly, that takes longer than the restore).
    """
    sharding = parallel.replicated(mesh)
    target = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                                    jax.eval_shape(make_state))
    restored = checkpointer.latest(target)
    if restored is not None:
        return restored.state, restored
    return parallel.replicate(make_state(), mesh), None


def train(config, workdir: str) -> losses.TrainState:
    """Train (or resume training) to config.training.n_iters steps; returns the final state."""
    t = config.training
    mesh = parallel.make_mesh()
    validate_train_config(config, num_devices=mesh.size)
    is_chief = jax.process_index() == 0

    # Everything that can reject the config, the data or the checkpoints runs before anything is written.
    sde = sde_lib.from_config(config)
    model = models.get_model(config)
    optimizer = losses.get_optimizer(config)
    train_data, test_data = datasets.get_dataset(config)
    init_rng, state_rng, sample_rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    checkpointer = Checkpointer(workdir, keep=t.keep_checkpoints or None, keep_every=t.keep_checkpoint_every or None)
    try:
        state, restored = restore_or_init(
            checkpointer, lambda: losses.create_train_state(state_rng, models.init_model(init_rng, config, model),
                                                            optimizer), mesh)
    except BaseException:
        checkpointer.close()  # orbax's threads must stop before the interpreter does (the loop's finally does it later)
        raise
    step = 0 if restored is None else restored.step
    if restored is not None:
        logging.info("Resumed from %s (step %d).", restored.path, step)
    window = LossWindow(step, t.skip_nonfinite, workdir, saved=None if restored is None else restored.meta)

    scaler = datasets.get_data_scaler(config)
    train_step = fuse_steps(losses.step_fn_from_config(config, sde, model, train=True, optimizer=optimizer,
                                                       scaler=scaler), donate=True, name="train_steps")
    eval_step = fuse_steps(losses.step_fn_from_config(config, sde, model, train=False, scaler=scaler), donate=False,
                           name="eval_steps")
    train_iter = train_data.batches(t.batch_size, start_step=step, steps_per_call=t.n_jitted_steps)
    eval_iter = test_data.batches(config.eval.batch_size, start_step=step // t.eval_freq, augment=False)
    sample_fn = make_sample_fn(config, sde, model, t.snapshot_num_samples, mesh) if t.snapshot_sampling else None
    learning_rate = losses.learning_rate_schedule(config)
    writer = MetricWriter(workdir, resume_step=step)

    def save(periodic: bool):
        window.check()  # raises before a NaN/inf step can reach a checkpoint or a sample grid
        if periodic and sample_fn is not None:  # samples first: a periodic checkpoint implies its grid exists
            images = parallel.gather(sample_fn(jax.random.fold_in(sample_rng, step), state.ema_variables))
            if is_chief:
                path = write_samples(images, workdir, step, nrow=config.model.num_classes or None)
                logging.info("Step %d: samples written to %s", step, path)
        checkpointer.save(step, state, periodic=periodic, meta=window.to_json())

    window_start, window_step = time.perf_counter(), step
    bar = tqdm(total=t.n_iters, initial=step, desc="train", unit="step", disable=not is_chief, dynamic_ncols=True)
    stop = StopRequests()
    try:
        while step < t.n_iters:
            batch = parallel.shard_batch(next(train_iter), mesh, batch_axis=1)
            state, step_losses = train_step(state, batch)
            window.add(step_losses)
            step += t.n_jitted_steps
            bar.update(t.n_jitted_steps)

            if step % t.log_freq == 0:
                loss = window.close(step)
                steps_per_sec = (step - window_step) / (time.perf_counter() - window_start)
                extra = {"nonfinite_steps": window.nonfinite_steps} if t.skip_nonfinite else {}
                writer.write(step, loss=loss, lr=float(learning_rate(step - 1)), steps_per_sec=steps_per_sec,
                             images_per_sec=steps_per_sec * t.batch_size, **extra)
                bar.set_postfix(loss=f"{loss:.4g}", img_s=f"{steps_per_sec * t.batch_size:.0f}")
                window_start, window_step = time.perf_counter(), step

            if step % t.eval_freq == 0:
                _, eval_losses = eval_step(state, parallel.shard_batch(next(eval_iter), mesh, batch_axis=1))
                writer.write(step, eval_loss=float(jnp.mean(eval_losses)))

            if step % t.snapshot_freq == 0 or step >= t.n_iters:
                save(periodic=True)
            elif step % t.snapshot_freq_for_preemption == 0 or stop.requested:
                save(periodic=False)
            if stop.requested and step < t.n_iters:
                checkpointer.wait()
                raise Preempted(stop.signum, step, workdir)
    finally:
        stop.close()
        bar.close()
        checkpointer.wait()
        checkpointer.close()
        writer.close()
    return state
