"""One data-parallel code path for 1 device, N local devices and N hosts.

A 1-D mesh over every device (axis 'data'): the batch axis is sharded over
it, the train state is replicated. Host-local numpy batches become global
arrays with `jax.make_array_from_process_local_data`.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def maybe_initialize_distributed() -> None:
    """Join a multi-host run when launched as one (JAX_COORDINATOR_ADDRESS set, or a TPU pod / SLURM / MPI
    launcher that jax.distributed detects); a plain single-process run is left alone."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("JAX_NUM_PROCESSES"):
        jax.distributed.initialize()


def make_mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def replicate(tree, mesh: Mesh):
    """Place every leaf of `tree` on every device."""
    return jax.device_put(tree, replicated(mesh))


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Sharding of arrays whose axis `batch_axis` is the (global) batch."""
    return NamedSharding(mesh, P(*([None] * batch_axis), "data"))


def shard_batch(batch, mesh: Mesh, batch_axis: int = 0):
    """Host-local numpy arrays -> global jax arrays, split over the mesh along `batch_axis`."""
    sharding = batch_sharding(mesh, batch_axis)
    return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
