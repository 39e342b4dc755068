"""The one training loop: `train(task)` trains any component that states its task (tasks/).

Contract. A task gives what is particular to a component; the loop does everything else, once:

    task.schedule                       a Schedule (batch size, steps, log / eval / snapshot frequencies)
    task.workdir                        where its checkpoints, metrics.jsonl, TensorBoard and snapshots go
    task.train_data, task.eval_data     datasets.Dataset-like splits (.batches(batch, start_step, steps_per_call,
                                        augment)); eval_data None: no eval loss; task.augment: random flips
    task.init_state() -> TrainState     fresh state (traced with jax.eval_shape when resuming)
    task.train_step(state, batch, frozen) -> (state, loss)   jit-able; ends in training.state.apply_gradients
    task.eval_step(state, batch, frozen) -> loss             jit-able
    task.frozen, task.frozen_record     parameters used but not trained (None if none), passed to every step
                                        as an argument, never saved by the loop; frozen_record (JSON) names
                                        them (source run, step, digest) and is saved with every checkpoint
    task.snapshot(state, step)          what a periodic checkpoint shows (sample grid, reconstructions);
                                        called on every process, writes on process 0
    task.finish(state)                  after the last step (exports, final figures)
    task.learning_rate(step)            for the logs

The loop: data by (seed, step) sharded over the device mesh and hosts, n_jitted_steps fused per compiled
call, the NaN/inf guard (training/loss_window.py), metrics and a progress bar, periodic checkpoints (with a
snapshot) every snapshot_freq steps and a pre-emption checkpoint every snapshot_freq_for_preemption steps
and on SIGTERM, the keep policy. A run killed at any moment and rerun with the same command resumes from
the newest usable checkpoint (which holds the whole state, rng included, and the open log window) and ends
with the same parameters, bit for bit on CPU, and the same logged losses. A checkpoint written against
other frozen parameters is refused in one line before anything is written.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
from absl import logging
from tqdm import tqdm

from training import parallel
from training.checkpoint import Checkpointer, abstract_like
from training.loss_window import LossWindow
from training.preemption import Preempted, StopRequests
from training.validation import ConfigError
from training.writers import MetricWriter


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long and how often: global batch sizes, steps, and the frequencies (in steps) of logs, eval losses,
    periodic and pre-emption checkpoints; keep_checkpoints > 0 keeps only that many periodic ones (and those at
    multiples of keep_checkpoint_every)."""

    batch_size: int
    n_iters: int
    log_freq: int
    snapshot_freq: int
    snapshot_freq_for_preemption: int
    eval_freq: int = 0
    eval_batch_size: int = 0
    n_jitted_steps: int = 1
    keep_checkpoints: int = 0
    keep_checkpoint_every: int = 0
    skip_nonfinite: bool = False
    config_group: str = "training"  # where these fields live in the config, for error messages

    @classmethod
    def from_config(cls, config) -> "Schedule":
        """The score model's schedule: config.training, with config.eval.batch_size for eval losses."""
        t = config.training
        return cls(batch_size=t.batch_size, n_iters=t.n_iters, log_freq=t.log_freq, snapshot_freq=t.snapshot_freq,
                   snapshot_freq_for_preemption=t.snapshot_freq_for_preemption, eval_freq=t.eval_freq,
                   eval_batch_size=config.eval.batch_size, n_jitted_steps=t.n_jitted_steps,
                   keep_checkpoints=t.keep_checkpoints, keep_checkpoint_every=t.keep_checkpoint_every,
                   skip_nonfinite=t.skip_nonfinite)

    def check(self, num_devices: int) -> None:
        """ConfigError naming the field when the schedule cannot run on `num_devices` devices."""
        g, k = self.config_group, self.n_jitted_steps
        if k < 1:
            raise ConfigError(f"config.{g}.n_jitted_steps must be >= 1, got {k}.")
        if self.n_iters < 0:
            raise ConfigError(f"config.{g}.n_iters={self.n_iters} must be >= 0.")
        freqs = ["log_freq", "snapshot_freq", "snapshot_freq_for_preemption"] + (["eval_freq"] if self.eval_freq else [])
        for name in freqs:
            value = getattr(self, name)
            if value < 1 or value % k:
                raise ConfigError(f"config.{g}.{name}={value} must be a positive multiple of "
                                  f"config.{g}.n_jitted_steps={k}.")
        for name in ("keep_checkpoints", "keep_checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"config.{g}.{name}={getattr(self, name)} must be >= 0 (keep_checkpoints=0 keeps "
                                  f"every periodic checkpoint).")
        if self.keep_checkpoint_every % self.snapshot_freq:
            raise ConfigError(f"config.{g}.keep_checkpoint_every={self.keep_checkpoint_every} must be a multiple of "
                              f"config.{g}.snapshot_freq={self.snapshot_freq}, the steps periodic checkpoints "
                              f"exist at.")
        sizes = [(f"{g}.batch_size", self.batch_size)] + ([("eval.batch_size", self.eval_batch_size)]
                                                          if self.eval_freq else [])
        for name, value in sizes:
            parallel.check_divisible(name, value, num_devices)


#: XLA:CPU options for compiled training steps. By default this XLA hands convolutions and reductions (among
#: others) to YNNPACK fusions; for the score U-Nets' train steps its convolutions (the weight gradients above
#: all) are slower than XLA's own Eigen kernels, while its reductions are faster, so only reductions go to it.
#: Measured with benchmarks/cpu_vs_pytorch.py: see README.md "Benchmarks".
CPU_TRAIN_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}


@functools.lru_cache(maxsize=None)
def _known(options: tuple) -> bool:
    """Whether this jaxlib's XLA accepts the compile options (older ones without YNNPACK refuse them)."""
    try:
        jax.jit(lambda x: x, compiler_options=dict(options)).lower(0.0).compile()
    except jax.errors.JaxRuntimeError:
        return False
    return True


def train_compiler_options() -> dict | None:
    """CPU_TRAIN_OPTIONS on the CPU backend, unless XLA_FLAGS already chooses the YNNPACK fusions or this XLA
    does not know them; else None."""
    chosen = any(name in os.environ.get("XLA_FLAGS", "") for name in CPU_TRAIN_OPTIONS)
    usable = jax.default_backend() == "cpu" and not chosen and _known(tuple(CPU_TRAIN_OPTIONS.items()))
    return CPU_TRAIN_OPTIONS if usable else None


def fuse_steps(step_fn, donate: bool, name: str = "fused_steps"):
    """One compiled call running step_fn(state, batch, frozen) over batches with a leading steps axis
    -> (state, per-step losses).

    The steps are unrolled at trace time (a fully unrolled lax.scan): XLA:CPU runs
    a while-loop body about 7x slower than the same straight-line code (measured
    on the digits config), and lax.scan keeps the loop even for one step. The
    cost is compile time linear in n_jitted_steps. On CPU it compiles with train_compiler_options().
    """
    def run(state, batches, frozen):
        step_losses = []
        for k in range(jax.tree_util.tree_leaves(batches)[0].shape[0]):
            state, loss = step_fn(state, jax.tree_util.tree_map(lambda x: x[k], batches), frozen)
            step_losses.append(loss)
        return state, jnp.stack(step_losses)
    run.__name__ = name  # names the compiled program in JAX's logs
    return jax.jit(run, donate_argnums=(0,) if donate else (), compiler_options=train_compiler_options())


def _check_frozen(restored, record: dict) -> None:
    """A checkpoint trained against other frozen parameters than the task's is refused, naming both."""
    saved = restored.meta.get("frozen", {})
    if saved != record:
        raise ConfigError(f"The checkpoint {restored.path} was trained against {json.dumps(saved, sort_keys=True)} "
                          f"but this run's config gives {json.dumps(record, sort_keys=True)}; point the config back "
                          f"at the run it was trained on, or use another --workdir.")


def train(task):
    """Train (or resume training) `task` to its schedule's n_iters; returns the final state."""
    s = task.schedule
    mesh = parallel.make_mesh()
    s.check(mesh.size)
    is_chief = jax.process_index() == 0
    checkpointer = Checkpointer(task.workdir, keep=s.keep_checkpoints or None,
                                keep_every=s.keep_checkpoint_every or None)
    try:  # everything that can refuse the checkpoints runs before anything is written
        restored = checkpointer.latest(abstract_like(task.init_state, mesh))
        if restored is not None:
            _check_frozen(restored, task.frozen_record)
    except BaseException:
        checkpointer.close()  # orbax's threads must stop before the interpreter does
        raise
    state = parallel.replicate(task.init_state(), mesh) if restored is None else restored.state
    step = 0 if restored is None else restored.step
    if restored is None:
        logging.info("Training from step 0 to %d; checkpoints, metrics and samples go to %s.", s.n_iters,
                     os.path.abspath(task.workdir))
    else:
        logging.info("Resumed from %s (step %d of %d).", restored.path, step, s.n_iters)
    frozen = None if task.frozen is None else parallel.replicate(task.frozen, mesh)
    window = LossWindow(step, s.skip_nonfinite, task.workdir, saved=None if restored is None else restored.meta)
    train_step = fuse_steps(task.train_step, donate=True, name="train_steps")
    train_iter = task.train_data.batches(s.batch_size, start_step=step, steps_per_call=s.n_jitted_steps,
                                         augment=task.augment)
    evaluating = task.eval_data is not None and s.eval_freq > 0
    if evaluating:
        def eval_steps(state, batch, frozen):  # the compiled program's name in JAX's logs
            return task.eval_step(state, batch, frozen)
        eval_step = jax.jit(eval_steps)
        eval_iter = task.eval_data.batches(s.eval_batch_size, start_step=step // s.eval_freq, augment=False)
    writer = MetricWriter(task.workdir, resume_step=step)

    def save(periodic: bool):
        window.check()  # raises before a NaN/inf step can reach a checkpoint or a snapshot
        if periodic:  # the snapshot first: a periodic checkpoint implies its snapshot exists
            task.snapshot(state, step)
        checkpointer.save(step, state, periodic=periodic, meta={**window.to_json(), "frozen": task.frozen_record})

    window_start, window_step = time.perf_counter(), step
    bar = tqdm(total=s.n_iters, initial=step, desc="train", unit="step", disable=not is_chief, dynamic_ncols=True)
    stop = StopRequests()
    try:
        while step < s.n_iters:
            batch = parallel.shard_batch(next(train_iter), mesh, batch_axis=1)
            state, step_losses = train_step(state, batch, frozen)
            window.add(step_losses)
            step += s.n_jitted_steps
            bar.update(s.n_jitted_steps)

            if step % s.log_freq == 0:
                loss = window.close(step)
                steps_per_sec = (step - window_step) / (time.perf_counter() - window_start)
                extra = {"nonfinite_steps": window.nonfinite_steps} if s.skip_nonfinite else {}
                writer.write(step, loss=loss, lr=float(task.learning_rate(step - 1)), steps_per_sec=steps_per_sec,
                             images_per_sec=steps_per_sec * s.batch_size, **extra)
                bar.set_postfix(loss=f"{loss:.4g}", img_s=f"{steps_per_sec * s.batch_size:.0f}")
                window_start, window_step = time.perf_counter(), step

            if evaluating and step % s.eval_freq == 0:
                eval_batch = jax.tree_util.tree_map(lambda x: x[0], next(eval_iter))  # one step's batch
                eval_loss = eval_step(state, parallel.shard_batch(eval_batch, mesh), frozen)
                writer.write(step, eval_loss=float(eval_loss))

            if step % s.snapshot_freq == 0 or step >= s.n_iters:
                save(periodic=True)
            elif step % s.snapshot_freq_for_preemption == 0 or stop.requested:
                save(periodic=False)
            if stop.requested and step < s.n_iters:
                checkpointer.wait()
                raise Preempted(stop.signum, step, task.workdir)
    finally:
        stop.close()
        bar.close()
        checkpointer.wait()
        checkpointer.close()
        writer.close()
    task.finish(state)
    return state
