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
