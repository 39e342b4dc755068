"""Does a trained ControlNet make samples follow their conditions? Edge F1 (Canny, 1-pixel tolerance) of

    (a) controlled samples against their own condition's edges
    (b) the same samples against a shuffled condition's edges        (chance for these samples)
    (c) the base model's samples, without control, against the conditions' edges
    (d) real images against their own edges                           (the metric's ceiling: 1 by construction)
    (e) real images against a shuffled image's edges                  (chance for real digits)

and, at conditioning scale 0, the largest difference between controlled and base samples drawn with the same
noise (0 up to XLA's rounding of the differently fused program: the control adds exact zeros).

    python -m benchmarks.controlnet_edges --base runs/unet_digits --controlnet runs/canny_digits [--num 64]

Measured on 2 shared CPU cores: base configs/controlnet/unet_digits_base.py stopped at step 525 (EMA rate
0.999), ControlNet configs/controlnet/canny_digits.py 900 steps (lr 5e-4, EMA 0.999 to step 600, then 0.99),
64 test digits, 'pc' ancestral sampler, 100 steps. Edge F1 at 1-pixel tolerance / exact:
(a) 0.995 / 0.838, (b) 0.974 / 0.418, (c) 0.965 / 0.392, (d) 1.000 / 1.000, (e) 0.981 / 0.430; scale 0 vs
the base: max |difference| 0 (the samples are identical). At 8x8 one pixel of slack saturates the tolerant F1
(shuffled real digits score 0.98), so the exact F1 is the one that separates control from chance.

On 28 px MNIST, the quickstart's base (configs/vp/ddpm_mnist.py, 2,000 steps) and configs/controlnet/canny_mnist.py
(2,000 steps), all 500 test digits, DPM-Solver 20 steps, with FD in the domain classifier's features:

    python -m benchmarks.controlnet_edges --config controlnet/canny_mnist --base /tmp/qs/r2 \
        --controlnet /tmp/cn28/canny --num 500 --classifier_dir /tmp/qs/clsrun/classifier

(a) 0.997 / 0.868, (b) 0.663 / 0.243, (c) 0.670 / 0.242, (d) 1.000 / 1.000, (e) 0.662 / 0.243; scale 0 vs the
base: max |difference| 0; FD controlled 4.794, base 27.318, scale 0 27.318, real 4.382. The edges pin each
digit's shape, so the controlled samples' FD is near the real digits'.
"""
from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import datasets
import sde_lib
from benchmarks.common import fd_to_train, load_config
from data_sources import conditions
from evaluation import features
from modes import controlnet_sample
from tasks import controlnet as task_lib
from tasks.score import make_sample_fn
from training import parallel


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="controlnet/canny_digits")
    parser.add_argument("--base", required=True, help="the base run's workdir")
    parser.add_argument("--controlnet", required=True, help="the ControlNet run's workdir")
    parser.add_argument("--num", type=int, default=64, help="test images (one sample each)")
    parser.add_argument("--method", default="", help="sampler (config.sampling.method); default the config's")
    parser.add_argument("--classifier_dir", default="",
                        help="a domain classifier run (--mode train_classifier): FD of each set against the train split")
    args = parser.parse_args()
    config = load_config(args.config)
    if config.text.conditional:  # its samples would need prompts, which this comparison does not draw
        raise SystemExit(f"--config {args.config} has a text-conditioned base; this benchmark measures ControlNets on "
                         f"bases without text (sample a text one with --mode sample and config.sampling.prompt).")
    config.controlnet.base_workdir = args.base
    if args.method:
        config.sampling.method = args.method
    sigma = config.controlnet.canny_sigma
    mesh = parallel.make_mesh()
    test = datasets.load_split(config, "test", host_index=0, host_count=1)
    indices = np.arange(args.num) % len(test)
    images = test.source.read(indices)[0] / np.float32(255)
    cond = jnp.asarray(task_lib.condition_fn(config, test)(images, indices))
    controlled, base, restored = controlnet_sample.load(config, args.controlnet, mesh)
    sde = sde_lib.from_config(config)
    rng = jax.random.PRNGKey(config.seed)
    cn_variables = {"params": restored.state.ema_params}

    def draw(model, variables, **given):
        return parallel.gather(make_sample_fn(config, sde, model, args.num, mesh)(rng, variables, **given))

    controlled_samples = draw(controlled, cn_variables, hint=cond, base=base.variables)
    base_samples = draw(base.model, base.variables)
    at_zero = draw(dataclasses.replace(controlled, conditioning_scale=0.0), cn_variables, hint=cond,
                   base=base.variables)
    edges = conditions.canny(images, sigma)
    shuffled = edges[np.random.default_rng(0).permutation(args.num)]

    def f1(x, reference):
        """'F1 at 1-pixel tolerance / at 0' (on small images one pixel of slack already covers much of them)."""
        return " / ".join(f"{np.mean(conditions.edge_f1(conditions.canny(x, sigma), reference, tol)):.3f}"
                          for tol in (1, 0))

    print(f"ControlNet {args.controlnet} (step {restored.step}) on base {args.base} (step {base.record['step']}); "
          f"{args.num} test images of {config.data.dataset}, sampler {config.sampling.method}, "
          f"condition {config.controlnet.condition}; edge F1 at 1-pixel tolerance / exact")
    print(f"(a) edge F1, samples vs their own condition:   {f1(controlled_samples, edges)}")
    print(f"(b) edge F1, samples vs a shuffled condition:  {f1(controlled_samples, shuffled)}")
    print(f"(c) edge F1, base samples (no control):        {f1(base_samples, edges)}")
    print(f"(d) edge F1, real images vs their own edges:   {f1(images, edges)}")
    print(f"(e) edge F1, real images vs shuffled edges:    {f1(images, shuffled)}")
    print(f"scale 0 vs base, same noise: max |difference| {np.abs(at_zero - base_samples).max():.2e}, "
          f"identical uint8 pixels {np.mean(datasets.to_uint8(at_zero) == datasets.to_uint8(base_samples)):.4f}")
    if args.classifier_dir:
        config.eval.classifier_dir = args.classifier_dir
        net = features.classifier_net(config, args.controlnet)
        train = features.split_statistics(config, args.controlnet, "stats", net, "train")
        fd = {name: fd_to_train(config, net, train, x) for name, x in
              (("controlled", controlled_samples), ("base", base_samples), ("scale 0", at_zero), ("real", images))}
        print(f"FD against the train split ({net.description}): " + ", ".join(f"{k} {v:.3f}" for k, v in fd.items()))


if __name__ == "__main__":
    main()
