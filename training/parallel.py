"""One data-parallel code path for 1 device, N local devices and N hosts.

A 1-D mesh over every device (axis 'data'): the batch axis is sharded over
it, the train state is replicated. Host-local numpy batches become global
arrays with `jax.make_array_from_process_local_data`.
"""
from __future__ import annotations

import itertools
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from training.validation import ConfigError


def initialize_distributed(auto_detect: bool = False) -> None:
    """Join a multi-process run, if this is one.

    Explicit: JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID in the environment
    of every process. auto_detect=True (main.py --multihost): let jax.distributed find its peers on
    Cloud TPU pods, SLURM, Open MPI or Kubernetes. Otherwise this is a single-process run.
    CPU-only processes exchange collectives over gloo.
    """
    explicit = "JAX_NUM_PROCESSES" in os.environ
    if not (explicit or auto_detect):
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                                   process_id=int(os.environ["JAX_PROCESS_ID"]))
    else:
        jax.distributed.initialize()


_barrier_count = itertools.count()  # barrier ids must be unique; every process counts the same calls


def barrier(name: str, timeout_minutes: float = 30.0) -> None:
    """Wait until every process reaches `name` (a no-op in a single-process run).

    CPU (gloo) collectives give a peer only 30 s to join the first collective, so
    hosts that finish start-up work (data loading, model init) at different times
    meet here first, on the coordination service, with a generous timeout.
    """
    client = jax._src.distributed.global_state.client  # no public barrier API yet
    if jax.process_count() > 1 and client is not None:
        client.wait_at_barrier(f"{name}-{next(_barrier_count)}", int(timeout_minutes * 60_000))


def check_divisible(field: str, value: int, num_devices: int) -> None:
    """ConfigError unless config.<field> (a batch split over the mesh) is a positive multiple of the devices."""
    if value < 1 or value % num_devices:
        raise ConfigError(f"config.{field}={value} must be a positive multiple of the {num_devices} devices.")


def make_mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def replicate(tree, mesh: Mesh):
    """Place every leaf of `tree` on every device (of every process: the hosts first meet at a barrier)."""
    barrier("replicate")
    return jax.device_put(tree, replicated(mesh))


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Sharding of arrays whose axis `batch_axis` is the (global) batch."""
    return NamedSharding(mesh, P(*([None] * batch_axis), "data"))


def gather(x) -> np.ndarray:
    """A (possibly multi-host) global array as one numpy array on every process."""
    if jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def shard_batch(batch, mesh: Mesh, batch_axis: int = 0):
    """Host-local numpy arrays -> global jax arrays, split over the mesh along `batch_axis`."""
    sharding = batch_sharding(mesh, batch_axis)
    return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
