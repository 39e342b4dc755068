"""Training throughput of the real train path: fused steps on a batch sharded over every device.

    python -m benchmarks.train_throughput                                  # DDPM++ CIFAR-10, CPU, batch 4
    python -m benchmarks.train_throughput --batch 128 --dtype bfloat16     # on a GPU: adds MFU

It builds the train step exactly as `--mode train` does (tasks.score.step_fn_from_config,
training.loop.fuse_steps with config.training.n_jitted_steps, donated state, batch
sharded on the mesh) and prints: images/s, ms per optimizer step, compile time,
XLA FLOPs per step, XLA's planned memory, the device's peak memory (GPU/TPU),
host peak RSS, and on a known accelerator the model-FLOPs utilisation
(XLA FLOPs per step / step time / device peak). The data pipeline is excluded
(benchmarks/data_throughput.py measures it). Weights are random: timings do not
depend on values.
"""
from __future__ import annotations

import argparse

import jax
import numpy as np

import datasets
import models
import sde_lib
from benchmarks import common
from tasks import score as score_task
from training import parallel
from training import state as training_state
from training.loop import fuse_steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="vp/ddpmpp_cifar10_continuous", help="configs/<this>.py")
    parser.add_argument("--batch", type=int, default=4, help="global batch")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--n_jitted_steps", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5, help="timed calls after one warm-up call")
    args = parser.parse_args(argv)

    config = common.load_config(args.config)
    config.model.dtype = args.dtype
    config.training.batch_size = args.batch
    k = args.n_jitted_steps
    timed = time_train_step(config, k, args.iters)
    seconds, compile_s, flops = timed["seconds"], timed["compile_s"], timed["flops"]
    mfu = common.model_flops_utilisation(flops / seconds / jax.device_count(), args.dtype)
    print(f"{args.config} | {jax.device_count()} x {jax.devices()[0].device_kind} | batch {args.batch} | "
          f"{args.dtype} | n_jitted_steps {k}")
    print(f"images/s          {args.batch / seconds:,.1f}")
    print(f"ms/step           {1e3 * seconds:,.1f}")
    print(f"compile s         {compile_s:,.1f}")
    print(f"GFLOP/step (XLA)  {flops / 1e9:,.1f}   ({flops / 1e9 / args.batch:,.2f} per image)")
    print(f"achieved TFLOP/s  {flops / seconds / 1e12:,.3f}")
    print(f"MFU               {'n/a (unlisted device)' if mfu is None else f'{100 * mfu:.1f}%'}")
    print(f"XLA planned MiB   {common.mib(timed['planned_bytes'])}")
    print(f"peak device MiB   {common.mib(common.peak_device_bytes())}")
    print(f"peak host MiB     {common.mib(common.peak_host_bytes())}")


def time_train_step(config, k: int = 1, iters: int = 5) -> dict[str, float]:
    """config's train step at config.training.batch_size, fused k at a time, on random data and weights:
    {'seconds': median per optimizer step over `iters` calls after a warm-up one, 'compile_s', 'flops': XLA's
    per optimizer step, 'planned_bytes': XLA's planned memory}."""
    mesh = parallel.make_mesh()
    sde, model, optimizer = sde_lib.from_config(config), models.get_model(config), training_state.get_optimizer(config.optim)
    state = parallel.replicate(training_state.create_train_state(jax.random.PRNGKey(0), common.random_variables(config),
                                                         optimizer), mesh)
    step = fuse_steps(score_task.step_fn_from_config(config, sde, model, train=True, optimizer=optimizer,
                                                 scaler=datasets.get_data_scaler(config)), donate=True)
    d, b = config.data, config.training.batch_size
    rng = np.random.default_rng(0)
    arrays = {"image": rng.uniform(size=(k, b, d.image_size, d.image_size, d.num_channels)).astype(np.float32)}
    if config.model.num_classes:
        arrays["label"] = rng.integers(0, config.model.num_classes, size=(k, b)).astype(np.int32)
    batch = parallel.shard_batch(arrays, mesh, batch_axis=1)
    compiled, compile_s = common.compile_timed(step, state, batch, None)
    holder = [state]

    def run():
        holder[0], step_losses = compiled(holder[0], batch, None)
        step_losses.block_until_ready()

    return {"seconds": common.time_calls(run, iters) / k, "compile_s": compile_s,
            "flops": common.xla_flops(compiled) / k, "planned_bytes": common.planned_bytes(compiled)}


if __name__ == "__main__":
    main()
