"""Autoencoder quality on Fashion-MNIST's test split: LDM's KL and VQ autoencoders side by side, and the KL one
with kl_weight = 1 as a negative control.

    python -m benchmarks.autoencoder_quality [--steps 2000 --classifier_steps 1000 --workdir runs/ae_quality]

Everything trains through the one loop (each run under <workdir>/<name>, so a rerun resumes or reuses it):
the domain classifier once (--mode train_classifier's task), then configs/autoencoder/kl_fashion_mnist.py,
vq_fashion_mnist.py and kl_fashion_mnist.py with autoencoder.kl_weight = 1, all for --steps steps with the
PatchGAN from halfway (disc_start = steps / 2, as the configs have it at 1000 of 2000). Each run's export
(tasks/latent.py) then reconstructs the 10k test images, x_hat = D(E(2x - 1)) (the posterior mean for KL, the
quantised latent for VQ, exactly what a latent model's samples are decoded through), and the columns are:
    PSNR      mean_b 10 log10(1 / MSE_b) on [0, 1] images (tasks.autoencoder.psnr);
    FD        Frechet distance of the reconstructions (rounded to 8 bits) against the train split, in the
              domain classifier's penultimate features; next to it the floor FD(test, train) of the data itself,
              the best an autoencoder can reach;
    z std     std of the scaled latents z = s E(2x - 1) over the test split (s measured on training images;
              ~1 is what the score model's SDE expects);
    codes     for VQ: the codebook perplexity and fraction of its 256 codes used over the test split;
    run s     seconds for that run's training, export and measurement.

Measured (2 CPU cores shared with other jobs, jax CPU; 37.8 min wall for the whole script):

    python -m benchmarks.autoencoder_quality --steps 600 --classifier_steps 500 --workdir /tmp/ae14/runs

600 steps instead of the configs' 2000, and a 500-step classifier instead of 1000, so that the script fits in
an hour on the loaded machine (about 1 s per autoencoder step).

    Fashion-MNIST test split (10k), 600 steps of batch 32, GAN from step 300; domain classifier (500 steps, test
    accuracy 0.875); FD against the train split, floor FD(test, train) = 0.106
    autoencoder   PSNR dB       FD   floor  z std  scale s          codes    run s
    kl              19.21    2.757   0.106  0.999    0.395              -      650
    vq              14.86   14.697   0.106  0.995   0.0966    2.4 ppl 0.04      569
    kl_weight_1     16.16   18.055   0.106  0.994     2.12              -      517

The KL autoencoder is the best by far (and its scaled test latents have std 0.999, inside 0.9-1.1); the negative
control with kl_weight = 1 is visibly worse (3 dB lower PSNR, 6.5x the FD): the KL term squeezes the posterior
towards N(0, I) and the decoder loses detail. That VQ row started its codebook at taming's U(-1/K, 1/K): it
collapsed to about 10 of its 256 codes (4% used, perplexity 2.4), hence the low PSNR.

With the codebook drawn from the fresh encoder's outputs on one training batch (autoencoder.vq_init = 'data', now
in vq_fashion_mnist.py), rerun with the other two runs and the classifier reused (2 CPU cores, 410 s wall, the VQ
run 307 s of it, with the test suite running beside it):

    python -m benchmarks.autoencoder_quality --steps 600 --classifier_steps 500 --workdir /tmp/ae24

    autoencoder   PSNR dB       FD   floor  z std  scale s          codes    run s
    kl              19.21    2.757   0.106  0.999    0.395              -       46
    vq              17.18    7.143   0.106  1.000    0.241   25.8 ppl 1.00      307
    kl_weight_1     16.16   18.055   0.106  0.994     2.12              -       47

Every code is in use (perplexity 25.8 of 256) and the VQ autoencoder gains 2.3 dB and halves its FD, but stays
behind the KL one at this length; all three remain far above the data's floor.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

if __name__ == "__main__" and not __package__:  # run as a file: the repo root, not benchmarks/, goes first
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import datasets  # noqa: E402
from configs.autoencoder import kl_fashion_mnist, vq_fashion_mnist  # noqa: E402
from evaluation import features, metrics  # noqa: E402
from models.vq import codebook_usage  # noqa: E402
from modes.train import train, train_classifier  # noqa: E402
from tasks.autoencoder import psnr  # noqa: E402
from tasks.latent import load_export  # noqa: E402

VARIANTS = {"kl": (kl_fashion_mnist, {}), "vq": (vq_fashion_mnist, {}),
            "kl_weight_1": (kl_fashion_mnist, {"kl_weight": 1.0})}


def get_config(name: str, args):
    module, overrides = VARIANTS[name]
    config = module.get_config()
    t = config.training
    t.n_iters = t.snapshot_freq = t.snapshot_freq_for_preemption = args.steps
    t.log_freq = t.eval_freq = max(args.steps // 10, 1)
    config.autoencoder.disc_start = args.steps // 2
    config.autoencoder.update(overrides)
    config.classifier.n_iters = args.classifier_steps
    config.eval.classifier_dir = os.path.join(args.workdir, "classifier")
    return config


def measure(latents, test: datasets.Dataset, net, train_stats, batch_size: int) -> dict:
    """PSNR, FD against the train split, scaled-latent std (and VQ codebook use) of `latents` on `test`."""
    encode, decode = jax.jit(latents.encode), jax.jit(latents.decode)
    vq = latents.meta["architecture"]["kind"] == "vq"
    if vq:
        m = latents.module
        indices = jax.jit(lambda p, z: m.apply({"params": p}, z / latents.scale, method=m.vector_quantize)[2]
                          ["indices"])
    psnrs, recon, zs, codes = [], [], [], []
    for batch in test.ordered_batches(batch_size):
        keep = batch["mask"] > 0
        z = encode(latents.params, batch["image"])
        x_hat = np.asarray(decode(latents.params, z))[keep]
        x = batch["image"][keep]
        psnrs.append(np.asarray(psnr(x, x_hat)) * len(x))
        recon.append(np.round(x_hat * 255).astype(np.uint8))
        zs.append(np.asarray(z)[keep].astype(np.float64))
        if vq:
            codes.append(np.asarray(indices(latents.params, z))[keep])
    recon = np.concatenate(recon)
    mu, sigma = metrics.feature_statistics(features.compute_features(net, recon, batch_size)["features"])
    row = {"psnr": np.sum(psnrs) / len(recon), "fd": metrics.frechet_distance(mu, sigma, train_stats["mu"],
                                                                               train_stats["sigma"]),
           "z_std": float(np.std(np.concatenate(zs))), "scale": latents.scale}
    if vq:
        perplexity, used = codebook_usage(jnp.asarray(np.concatenate(codes)).reshape(-1),
                                          latents.meta["architecture"]["num_vq_embeddings"])
        row.update(perplexity=float(perplexity), used=float(used))
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--classifier_steps", type=int, default=1000)
    parser.add_argument("--workdir", default="runs/ae_quality")
    args = parser.parse_args()
    start = time.perf_counter()
    config = get_config("kl", args)
    train_classifier(config, args.workdir)
    net = features.classifier_net(config, args.workdir)
    train_stats, test_stats = (features.split_statistics(config, args.workdir, "stats", net, split)
                               for split in ("train", "test"))
    floor = metrics.frechet_distance(test_stats["mu"], test_stats["sigma"], train_stats["mu"], train_stats["sigma"])
    test = datasets.load_split(config, "test", host_index=0, host_count=1)
    rows = {}
    for name in VARIANTS:
        variant = get_config(name, args)
        t0 = time.perf_counter()
        train(variant, os.path.join(args.workdir, name))
        rows[name] = {**measure(load_export(os.path.join(args.workdir, name)), test, net, train_stats,
                                config.eval.batch_size), "run_s": time.perf_counter() - t0}
    print(f"\nFashion-MNIST test split (10k), {args.steps} steps of batch {config.training.batch_size}, GAN from "
          f"step {args.steps // 2}; domain classifier ({args.classifier_steps} steps, test accuracy "
          f"{net.test_accuracy:.3f}); FD against the train split, floor FD(test, train) = {floor:.3f}")
    print(f"{'autoencoder':12s} {'PSNR dB':>8s} {'FD':>8s} {'floor':>7s} {'z std':>6s} {'scale s':>8s} "
          f"{'codes':>14s} {'run s':>8s}")
    for name, r in rows.items():
        codes = f"{r['perplexity']:6.1f} ppl {r['used']:.2f}" if "used" in r else "-"
        print(f"{name:12s} {r['psnr']:8.2f} {r['fd']:8.3f} {floor:7.3f} {r['z_std']:6.3f} {r['scale']:8.3g} "
              f"{codes:>14s} {r['run_s']:8.0f}")
    print(f"wall {time.perf_counter() - start:.0f} s on {jax.devices()[0].platform}")


if __name__ == "__main__":
    main()
