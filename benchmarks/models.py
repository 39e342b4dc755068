"""Forward / train-step cost of a score network: compile time, step time, memory and XLA FLOPs.

    python -m benchmarks.models                                   # DDPM++ CIFAR-10, CPU, batch 4, float32
    python -m benchmarks.models --batch 128 --dtype float32,bfloat16   # on a GPU

Per dtype it prints, for the forward pass (train=False) and for one full training step
(loss, backward, Adam, EMA; tasks.score.step_fn_from_config as training runs it):
compile time, median wall time per call and per image, XLA's FLOPs per image
(compiled.cost_analysis()), XLA's planned memory (arguments + outputs + temporaries
of the compiled program, compiled.memory_analysis()), the device's peak bytes in use
(memory_stats(), where the backend reports it: GPU/TPU, not CPU) and the process's peak
resident memory (host RAM, compilation included). Each dtype runs in its own process so
peak memory is per dtype. Weights are random N(0, 1/fan_in):
timings do not depend on values, and it skips compiling the initialiser.
Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

import datasets
import models
import sde_lib
from benchmarks import common
from tasks import score as score_task
from training import state as training_state


def xla_stats(compiled, batch: int) -> dict:
    return {"gflops_per_image": common.xla_flops(compiled) / batch / 1e9, "planned_bytes": common.planned_bytes(compiled)}


def benchmark(config_name: str, batch: int, dtype: str, iters: int, train: bool) -> list[dict]:
    config = common.load_config(config_name)
    config.model.dtype = dtype
    config.training.batch_size = batch
    model = models.get_model(config)
    variables = common.random_variables(config)
    d = config.data
    rng = np.random.RandomState(1)
    x = jnp.asarray(rng.uniform(size=(batch, d.image_size, d.image_size, d.num_channels)), jnp.float32)
    t = jnp.asarray(rng.uniform(0.1, 1.0, size=(batch,)), jnp.float32)
    rows = []

    forward = jax.jit(lambda v, x, t: model.apply(v, x, t, train=False))
    compiled, compile_s = common.compile_timed(forward, variables, x, t)
    seconds = common.time_calls(lambda: compiled(variables, x, t).block_until_ready(), iters)
    rows.append({"what": "forward", "compile_s": compile_s, "seconds": seconds, **xla_stats(compiled, batch)})

    if train:
        optimizer = training_state.get_optimizer(config.optim)
        sde = sde_lib.from_config(config)
        step_fn = score_task.step_fn_from_config(config, sde, model, train=True, optimizer=optimizer,
                                             scaler=datasets.get_data_scaler(config))
        state = training_state.create_train_state(jax.random.PRNGKey(0), variables, optimizer)
        batch_data = {"image": x}
        step = jax.jit(step_fn, donate_argnums=(0,))
        compiled, compile_s = common.compile_timed(step, state, batch_data)
        holder = [state]

        def run_step():
            holder[0], loss = compiled(holder[0], batch_data)
            loss.block_until_ready()

        seconds = common.time_calls(run_step, iters)
        rows.append({"what": "train step", "compile_s": compile_s, "seconds": seconds, **xla_stats(compiled, batch)})

    for row in rows:
        row.update(batch=batch, dtype=dtype, peak_bytes=common.peak_device_bytes(), rss_bytes=common.peak_host_bytes())
    return rows


def print_rows(rows):
    for r in rows:
        print(f"{r['dtype']:>9} {r['what']:>10} {r['batch']:>5} {r['compile_s']:>9.1f} {1e3 * r['seconds']:>10.1f} "
              f"{1e3 * r['seconds'] / r['batch']:>10.1f} {r['gflops_per_image']:>11.2f} "
              f"{common.mib(r['planned_bytes']):>12} {common.mib(r['peak_bytes']):>10} {common.mib(r['rss_bytes']):>10}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="vp/ddpmpp_cifar10_continuous", help="configs/<this>.py")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--dtype", default="float32", help="comma-separated: float32,bfloat16")
    parser.add_argument("--iters", type=int, default=5, help="timed calls after one warm-up call")
    parser.add_argument("--no_train", action="store_true", help="forward pass only")
    args = parser.parse_args(argv)
    dtypes = args.dtype.split(",")

    if len(dtypes) > 1:  # one process per dtype, so the device's peak memory is that dtype's
        for dtype in dtypes:
            cmd = [sys.executable, "-m", "benchmarks.models", "--config", args.config, "--batch", str(args.batch),
                   "--dtype", dtype, "--iters", str(args.iters)] + (["--no_train"] if args.no_train else [])
            subprocess.run(cmd, check=True)
        return

    print(f"{args.config} on {jax.devices()[0].device_kind} ({jax.default_backend()})")
    print(f"{'dtype':>9} {'what':>10} {'batch':>5} {'compile_s':>9} {'ms/call':>10} {'ms/image':>10} "
          f"{'GFLOP/image':>11} {'XLA_MiB':>12} {'peak_MiB':>10} {'RSS_MiB':>10}")
    print_rows(benchmark(args.config, args.batch, dtypes[0], args.iters, train=not args.no_train))


if __name__ == "__main__":
    main()
