"""Measurement helpers shared by the benchmark scripts: timing, compilation, XLA cost, memory, MFU."""
from __future__ import annotations

import importlib
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import models

#: Dense peak FLOP/s per device by jax device_kind prefix: (bfloat16, float32). float32 is the
#: non-tensor-core rate; XLA on NVIDIA uses TF32 tensor cores for float32 matmuls only when allowed.
PEAK_FLOPS = {
    "NVIDIA H100": (989e12, 67e12),
    "NVIDIA H200": (989e12, 67e12),
    "NVIDIA A100": (312e12, 19.5e12),
    "TPU v4": (275e12, 275e12 / 2),
    "TPU v5 lite": (197e12, 197e12 / 2),
}


def load_config(name: str):
    """configs/<name>.py's config, e.g. load_config('vp/ddpmpp_cifar10_continuous')."""
    return importlib.import_module("configs." + name.replace("/", ".")).get_config()


def random_variables(config, seed: int = 0):
    """Model variables with N(0, 1/fan_in) entries, without compiling the initialiser (slow on CPU)."""
    shapes = jax.eval_shape(lambda r: models.init_model(r, config), jax.random.PRNGKey(0))
    rng = np.random.RandomState(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(size=s.shape) / np.sqrt(max(np.prod(s.shape[:-1]), 1)), s.dtype), shapes)


def compile_timed(jitted, *args):
    """(compiled executable, seconds spent lowering and compiling)."""
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def time_calls(fn, iters: int) -> float:
    """Median seconds per call of fn() (which blocks on its result), after one warm-up call."""
    fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def xla_flops(compiled) -> float:
    """FLOPs of one call of a compiled program, as XLA's cost analysis counts them."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def planned_bytes(compiled) -> int | None:
    """XLA's planned memory of a compiled program: arguments + outputs + temporaries - aliased."""
    mem = compiled.memory_analysis()
    if mem is None:
        return None
    return mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes


def peak_device_bytes() -> int | None:
    """Peak bytes in use on device 0 (GPU/TPU backends report it; CPU does not)."""
    return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")


def peak_host_bytes() -> int:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def model_flops_utilisation(flops_per_second_per_device: float, dtype: str) -> float | None:
    """Achieved FLOP/s over the device's dense peak for `dtype`, or None for an unlisted device."""
    kind = jax.devices()[0].device_kind
    for prefix, (bf16, f32) in PEAK_FLOPS.items():
        if kind.startswith(prefix):
            return flops_per_second_per_device / (bf16 if dtype == "bfloat16" else f32)
    return None


def mib(n) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f}"


def restore_ema(config, workdir: str, step: int = 0):
    """(model, EMA variables, SDE, mesh, step) of a run's checkpoint of `step` (0: the newest periodic one)."""
    import sde_lib
    from modes.sample import newest_checkpoint
    from tasks.score import restore_train_state
    from training import parallel
    from training.checkpoint import Checkpointer

    model, mesh = models.get_model(config), parallel.make_mesh()
    step = step or newest_checkpoint(config, workdir)
    with Checkpointer(workdir) as checkpointer:
        variables = restore_train_state(checkpointer, step, config, model, mesh).ema_variables
    return model, variables, sde_lib.from_config(config), mesh, step


def chunk_rows(start: int, chunk: int, count: int) -> np.ndarray:
    """The rows start .. start + chunk - 1 of `count`, the last repeated past the end (a padded last chunk)."""
    return np.minimum(np.arange(start, start + chunk), count - 1)


def sample_in_chunks(sample_fn, variables, chunk: int, count: int, seed: int = 0, known=None, offset: int = 0,
                     **conditions):
    """`count` samples in [0, 1] of make_sample_fn's sample_fn (built for `chunk` samples), chunk by chunk, the
    last padded by repeating its last input (chunk_rows); known (count, H, W, C) and conditions' arrays are split
    alike. The chunk at row `start` draws from fold_in(PRNGKey(seed), offset + start), so rows offset .. of a
    larger set sampled here reproduce that set's samples when offset is a multiple of chunk."""
    from training import parallel

    out = []
    for start in range(0, count, chunk):
        part = chunk_rows(start, chunk, count)
        pick = lambda a: None if a is None else jnp.asarray(a[part])  # noqa: E731
        x = sample_fn(jax.random.fold_in(jax.random.PRNGKey(seed), offset + start), variables, None, pick(known),
                      **{k: pick(v) for k, v in conditions.items()})
        out.append(np.asarray(parallel.gather(x)))
    return np.concatenate(out)[:count]


def fd_to_train(config, net, train_stats, images) -> float:
    """FD of images in [0, 1] (N, H, W, C) against the train split's statistics, in net's features."""
    import datasets
    from evaluation import features, metrics

    f = features.compute_features(net, datasets.to_uint8(images), config.eval.batch_size)["features"]
    return metrics.frechet_distance(*metrics.feature_statistics(f), train_stats["mu"], train_stats["sigma"])
