"""Orbax checkpoints of the whole train state.

Two managers, as in score_sde: `checkpoints/` holds the periodic snapshots
(kept for evaluation), `checkpoints-meta/` holds the single latest
pre-emption checkpoint. Orbax writes each checkpoint to a temporary folder
and renames it when complete, so a killed write is never taken for a
checkpoint. Resuming takes the newer of the two.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

import losses
import models
from training import parallel


def _abstract(tree):
    """ShapeDtypeStructs (with shardings) describing `tree`, the restore target."""
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
    def __init__(self, workdir: str, max_to_keep: int | None = None):
        workdir = os.path.abspath(workdir)
        self.periodic = ocp.CheckpointManager(
            os.path.join(workdir, "checkpoints"), options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))
        self.preemption = ocp.CheckpointManager(
            os.path.join(workdir, "checkpoints-meta"), options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

    def _managers(self):
        return (self.periodic, self.preemption)

    def latest_step(self) -> int | None:
        steps = [m.latest_step() for m in self._managers() if m.latest_step() is not None]
        return max(steps) if steps else None

    def save(self, step: int, state, periodic: bool) -> None:
        """Save `state` as `step` in the periodic or the pre-emption manager (asynchronously)."""
        manager = self.periodic if periodic else self.preemption
        if step not in manager.all_steps():
            manager.save(step, args=ocp.args.StandardSave(state))

    def restore(self, step: int, like, periodic: bool = True):
        """The checkpoint `step` restored into the structure, dtypes and shardings of `like`."""
        manager = self.periodic if periodic else self.preemption
        return manager.restore(step, args=ocp.args.StandardRestore(_abstract(like)))

    def restore_latest(self, like):
        """(state, step) of the newest checkpoint of either kind, or (like, None) when there is none."""
        candidates = [(m.latest_step(), m is self.periodic) for m in self._managers() if m.latest_step() is not None]
        if not candidates:
            return like, None
        step, periodic = max(candidates)
        return self.restore(step, like, periodic), step

    def wait(self) -> None:
        for m in self._managers():
            m.wait_until_finished()

    def close(self) -> None:
        for m in self._managers():
            m.close()


def restore_state(checkpointer: Checkpointer, step: int, config, model, mesh):
    """The train state of periodic checkpoint `step`, replicated on the mesh, for inference (sampling,
    evaluation): its structure comes from jax.eval_shape of a fresh state, so nothing is initialised."""
    optimizer = losses.get_optimizer(config)

    def fresh():
        rng = jax.random.PRNGKey(0)
        return losses.create_train_state(rng, models.init_model(rng, config, model), optimizer)

    sharding = parallel.replicated(mesh)
    like = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                                  jax.eval_shape(fresh))
    return checkpointer.restore(step, like)
