"""Sampling throughput: images/s and score evaluations (NFE)/s of the sampler in config.sampling.

    python -m benchmarks.sampling_throughput --config vp/ddpm_mnist --batch 64 --num_steps 100
    python -m benchmarks.sampling_throughput --config vp/ddpmpp_cifar10_continuous --batch 256   # GPU

The sampler is jitted whole with its output sharded over every device, as in
training snapshots and evaluation. Prints compile time, seconds per batch,
images/s, NFE per sample and network evaluations per second (NFE x batch / s).
Weights are random: the cost does not depend on them.
"""
from __future__ import annotations

import argparse
import functools

import jax

import models
import samplers
import sde_lib
from benchmarks import common
from training import parallel


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="vp/ddpm_mnist", help="configs/<this>.py")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--num_steps", type=int, default=0, help="sampling.num_steps (0: the SDE's N)")
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args(argv)

    config = common.load_config(args.config)
    config.model.dtype = args.dtype
    config.sampling.num_steps = args.num_steps
    d = config.data
    mesh = parallel.make_mesh()
    sde, model = sde_lib.from_config(config), models.get_model(config)
    sampler = samplers.from_config(config, sde, (args.batch, d.image_size, d.image_size, d.num_channels))
    variables = parallel.replicate(common.random_variables(config), mesh)

    @functools.partial(jax.jit, out_shardings=(parallel.batch_sharding(mesh), None))
    def sample(rng, variables):
        return sampler(rng, models.get_score_fn(sde, model, variables, continuous=config.training.continuous))

    rng = jax.random.PRNGKey(0)
    compiled, compile_s = common.compile_timed(sample, rng, variables)
    nfe = int(compiled(rng, variables)[1])
    seconds = common.time_calls(lambda: jax.block_until_ready(compiled(rng, variables)), args.iters)
    print(f"{args.config} | {config.sampling.method} ({config.sampling.predictor}/{config.sampling.corrector}) | "
          f"{jax.device_count()} x {jax.devices()[0].device_kind} | batch {args.batch} | {args.dtype}")
    print(f"compile s          {compile_s:,.1f}")
    print(f"s/batch            {seconds:,.2f}")
    print(f"images/s           {args.batch / seconds:,.2f}")
    print(f"NFE per sample     {nfe}")
    print(f"network evals/s    {nfe * args.batch / seconds:,.0f}")


if __name__ == "__main__":
    main()
