"""Orbax checkpoints of the whole train state, safe against a kill at any moment.

Two managers, as in score_sde: `checkpoints/` holds the periodic snapshots
(kept for evaluation, or the newest `keep` of them), `checkpoints-meta/` the one
pre-emption checkpoint, replaced by each newer one. Every step folder holds two
items: `state` (the TrainState pytree) and `meta` (JSON: a fingerprint of the
state and whatever host-side bookkeeping the loop asks to keep with it).

What a kill can leave behind, and what happens to it (orbax on a local file system):

* a kill during a write leaves `<step>.orbax-checkpoint-tmp-<time>/`, which orbax
  never lists as a step; the next Checkpointer deletes it;
* orbax deletes the old pre-emption checkpoint only after the new one is
  renamed into place, so one complete pre-emption checkpoint always exists;
* a finalized folder can still be damaged (a kill while orbax deletes an old
  step file by file, a truncated copy, a disk error; orbax does not notice
  flipped bits in compressed data). `latest` therefore tries the checkpoints
  newest first, checks each restored state against its fingerprint, falls back
  to the next with a warning naming the bad one, and moves the bad ones aside
  to workdir/checkpoints-unreadable/ (orbax would otherwise refuse to save any
  step not newer than them). When none is usable it raises, moving nothing.

A checkpoint whose tree or shapes differ from the model under the current
config is not "damaged": that raises CheckpointMismatchError naming the first
differing parameter, before anything is restored or moved.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from training import parallel
from training.validation import ConfigError

UNREADABLE_DIR = "checkpoints-unreadable"
UNFINISHED_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's name for a step folder still being written


class CheckpointError(ValueError):
    """No checkpoint in the workdir can be read."""


class CheckpointMismatchError(ConfigError):
    """A checkpoint's train state has another tree or other shapes than the current config's."""


class _Unreadable(Exception):
    """One checkpoint folder failed to load; the message says why."""


@dataclasses.dataclass(frozen=True)
class Restored:
    state: Any
    step: int
    meta: dict
    path: str


def _abstract(tree):
    """ShapeDtypeStructs (with shardings) describing `tree`, the restore target."""
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


def _leaf_bits(x: jax.Array) -> jax.Array:
    """The raw bits of every element of x as uint32 (8-byte elements give two words each)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    if x.dtype.itemsize >= 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16}[x.dtype.itemsize]).astype(jnp.uint32)


@jax.jit
def _leaf_checksum(x: jax.Array) -> jax.Array:
    bits = _leaf_bits(x).reshape(-1)
    return jnp.sum(bits * (2 * jnp.arange(bits.shape[0], dtype=jnp.uint32) + 1), dtype=jnp.uint32)


def leaf_checksums(tree) -> list[int]:
    """One uint32 per leaf: sum_i (2i + 1) * bits(x_i) mod 2^32 over its elements in row-major order.

    Odd weights are invertible mod 2^32, so changing any single element always changes the
    fingerprint; a random corruption of a leaf goes unnoticed with probability 2^-32. Computed on
    the device, leaf by leaf (one small program per leaf shape traces far faster than one per tree).
    """
    sums = [_leaf_checksum(x) for x in jax.tree_util.tree_leaves(tree)]
    return [int(np.asarray(v.addressable_data(0))) for v in sums]


def _shapes(tree) -> dict[str, tuple]:
    """{'params/Conv_0/kernel': shape} for every leaf of a (serialized) pytree or orbax tree metadata."""
    def name(path):
        return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)
    return {name(p): tuple(leaf.shape) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_compatible(stored_metadata, like, where: str) -> None:
    """Raise CheckpointMismatchError if the checkpoint's tree (orbax metadata) differs from `like`'s."""
    have, want = _shapes(stored_metadata), _shapes(ocp.tree.serialize_tree(_abstract(like), keep_empty_nodes=True))

    def params_first(keys):
        return sorted(keys, key=lambda k: (not k.startswith("params/"), k))

    problems = [f"{k} has shape {have[k]} there but {want[k]} under this config"
                for k in params_first(have.keys() & want.keys()) if have[k] != want[k]]
    problems += [f"{k} is missing from it" for k in params_first(want.keys() - have.keys())]
    problems += [f"it has {k}, which this config's train state lacks" for k in params_first(have.keys() - want.keys())]
    if problems:
        more = f" (and {len(problems) - 1} more differences)" if len(problems) > 1 else ""
        raise CheckpointMismatchError(
            f"The checkpoint {where} was written for another architecture or optimizer: {problems[0]}{more}; "
            f"rerun with the config that wrote it (config.model, config.optim), or use another --workdir.")


def _reason(error: BaseException) -> str:
    """The first line of the root cause (tensorstore names the array and file there; orbax's wrapper does not)."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    text = text if len(text) <= 300 else text[:300] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _drop_orphaned_read_callbacks() -> None:
    """Silence what a failed restore leaves behind. Orbax closes its event loop as soon as one read fails,
    while tensorstore still completes the checkpoint's other reads; each of their callbacks then raises
    RuntimeError('Event loop is closed') as an unraisable exception, printed as a traceback after our
    one-line error. They say nothing new, so that one message is dropped; any other passes. The hook is
    installed before any restore: the orphaned callbacks can fire before the failed restore has returned."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_orphaned_read_callbacks", False):
        return

    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"):
            previous(unraisable)

    hook.drops_orphaned_read_callbacks = True
    sys.unraisablehook = hook


def periodic_steps(workdir: str) -> tuple[str, list[int]]:
    """(the periodic checkpoints' folder, their steps ascending), read without creating anything."""
    folder = os.path.join(os.path.abspath(workdir), "checkpoints")
    return folder, sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


class Checkpointer:
    """`keep`: how many periodic checkpoints to keep (None: all); `keep_every`: also keep those at multiples of it."""

    def __init__(self, workdir: str, keep: int | None = None, keep_every: int | None = None):
        self.workdir = os.path.abspath(workdir)
        policies = [ocp.checkpoint_managers.LatestN(keep)]  # LatestN(None) keeps all
        if keep is not None and keep_every:
            policies.append(ocp.checkpoint_managers.EveryNSteps(keep_every))
        _drop_orphaned_read_callbacks()
        self._remove_unfinished_writes()
        self.periodic = self._manager("checkpoints", ocp.checkpoint_managers.AnyPreservationPolicy(policies))
        self.preemption = self._manager("checkpoints-meta", ocp.checkpoint_managers.LatestN(1))

    def _remove_unfinished_writes(self) -> None:
        """Delete the step folders a kill left half-written (<step>.orbax-checkpoint-tmp-<time>). Done here rather
        than by orbax's cleanup_tmp_directories, which runs in a thread its close() does not wait for: a run stopped
        early (a bad config, no checkpoint) would die in that thread with a traceback after its one-line error."""
        if jax.process_index() == 0:
            for path in glob.glob(os.path.join(self.workdir, "checkpoints*", f"*{UNFINISHED_SUFFIX}*")):
                shutil.rmtree(path, ignore_errors=True)
        parallel.barrier("checkpoint_cleanup")

    def _manager(self, name: str, policy) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(create=True, preservation_policy=policy)
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        return ocp.CheckpointManager(os.path.join(self.workdir, name), item_handlers=handlers, options=options)

    def _managers(self):
        return (self.periodic, self.preemption)

    def save(self, step: int, state, periodic: bool, meta: dict | None = None) -> None:
        """Save `state` (and the JSON-able `meta`) as `step` in the periodic or pre-emption manager, asynchronously."""
        manager = self.periodic if periodic else self.preemption
        if step in manager.all_steps():
            return
        meta = {**(meta or {}), "fingerprint": leaf_checksums(state)}
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

    def _path(self, manager, step: int) -> str:
        return os.path.join(str(manager.directory), str(step))

    def _load(self, manager, step: int, like) -> Restored:
        """The checkpoint `step` of `manager`; _Unreadable if damaged, CheckpointMismatchError if incompatible."""
        path = self._path(manager, step)
        try:
            stored = manager.item_metadata(step)["state"]
        except Exception as e:  # noqa: BLE001 - any failure to read the metadata means a damaged folder
            raise _Unreadable(_reason(e)) from e
        if stored is None:
            raise _Unreadable("its tree metadata is missing")
        check_compatible(getattr(stored, "tree", stored), like, path)
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(like)), meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for truncated or missing files
            raise _Unreadable(_reason(e)) from e
        state, meta = restored["state"], dict(restored["meta"] or {})
        if meta.get("fingerprint") != leaf_checksums(state):
            raise _Unreadable("its contents do not match the fingerprint saved with it")
        return Restored(state=state, step=step, meta=meta, path=path)

    def restore(self, step: int, like, periodic: bool = True):
        """The checkpoint `step` restored into the structure, dtypes and shardings of `like`."""
        manager = self.periodic if periodic else self.preemption
        try:
            return self._load(manager, step, like).state
        except _Unreadable as e:
            raise CheckpointError(f"Checkpoint {self._path(manager, step)} is unreadable ({e}).") from e

    def latest(self, like) -> Restored | None:
        """The newest usable checkpoint of either kind (see the module docstring), or None when there is none."""
        candidates = sorted(((step, m is self.periodic, m) for m in self._managers() for step in m.all_steps()),
                            key=lambda c: c[:2], reverse=True)
        bad = []
        for step, _, manager in candidates:
            try:
                restored = self._load(manager, step, like)
            except _Unreadable as e:
                bad.append((manager, step, str(e)))
                logging.warning("Checkpoint %s is unreadable (%s); trying the next newest.",
                                self._path(manager, step), e)
                continue
            for manager_, step_, reason in bad:
                moved = self._move_aside(manager_, step_)
                logging.warning("Resuming from %s instead of the newer %s, which is unreadable (%s); moved it to %s.",
                                restored.path, self._path(manager_, step_), reason, moved)
            return restored
        if bad:
            manager, step, reason = bad[0]
            which = (f"{self._path(manager, step)} is unreadable ({reason})" if len(bad) == 1 else
                     f"the newest, {self._path(manager, step)}, is unreadable ({reason}), and so are the "
                     f"{len(bad) - 1} older ones")
            raise CheckpointError(f"No usable checkpoint in {self.workdir}: {which}; restore them from a backup, "
                                  f"or move checkpoints/ and checkpoints-meta/ away to train from scratch.")
        return None

    def restore_latest(self, like):
        """(state, step) of the newest usable checkpoint, or (like, None) when there is none."""
        restored = self.latest(like)
        return (like, None) if restored is None else (restored.state, restored.step)

    def _move_aside(self, manager, step: int) -> str:
        """Move a damaged step folder to workdir/checkpoints-unreadable/<manager>/<step>[.n]; returns where."""
        source = self._path(manager, step)
        folder = os.path.join(self.workdir, UNREADABLE_DIR, os.path.basename(str(manager.directory)))
        target, n = os.path.join(folder, str(step)), 1
        while os.path.exists(target):
            target, n = os.path.join(folder, f"{step}.{n}"), n + 1
        if jax.process_index() == 0:
            os.makedirs(folder, exist_ok=True)
            os.rename(source, target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"checkpoint_move_aside_{step}")
        manager.reload()
        return target

    def wait(self) -> None:
        for m in self._managers():
            m.wait_until_finished()

    def close(self) -> None:
        for m in self._managers():
            m.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()  # orbax's threads must stop before the interpreter does, on errors too


def abstract_like(make_state, mesh):
    """ShapeDtypeStructs (replicated on the mesh) of make_state()'s tree, traced with jax.eval_shape: the
    restore target, built without initialising anything (eagerly, that takes longer than a restore)."""
    sharding = parallel.replicated(mesh)
    return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                                  jax.eval_shape(make_state))
