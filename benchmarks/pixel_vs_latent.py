"""Pixel-space against latent-space diffusion on Fashion-MNIST at the same wall-clock training budget.

Both sides train on the same machine, one after the other, in one run of this script:

    python -m benchmarks.pixel_vs_latent [--budget_s 1200 --samples 1000 --workdir runs/pixel_vs_latent]
        [--autoencoder_dir RUN [--autoencoder_s S] | --ae_steps 600] [--classifier_dir DIR | --classifier_steps 500]

The two sides:
    pixel   configs/vp/ddpm_fashion_mnist.py, a DDPM U-Net on the 28x28x1 images (1.10M parameters);
    latent  configs/latent/ddpm_fashion_mnist.py, a DDPM U-Net on the 7x7x4 latents z = s E(2x - 1) of the KL
            autoencoder configs/autoencoder/kl_fashion_mnist.py (0.92M parameters), samples decoded by D.
Both with the same batch (64), optimiser, dropout, EMA (rate 0.999 with the warm-up min(0.999, (1+t)/(10+t))),
and the same sampler: DDIM (eta = 0) on --sampling_steps uniform steps of the VP SDE.

The autoencoder is the latent side's first stage: --autoencoder_dir reuses a finished run (its training seconds
from --autoencoder_s, else from its metrics.jsonl), or the script trains one for --ae_steps (GAN from halfway,
as benchmarks/autoencoder_quality.py) in <workdir>/autoencoder.

Budget. A probe compiles each side's train step exactly as the loop builds it (tasks.get_task's train_step,
training.loop.fuse_steps, the batch on the mesh, the autoencoder frozen) and times --probe_steps calls of it on
real batches, both sides' probes back to back before either trains (so a shared machine's load weighs on both
alike); each side then trains for

    n_iters = round(budget_s / t_step),   t_step the probe's median seconds a step,

through modes.train.train (so a rerun resumes it; the probe is kept in <workdir>/<side>/probe.json so the rerun
keeps the same n_iters). The loop's own data loading, compilation and checkpoints come on top, so the time it
actually took, `train s`, is measured separately as the sum of its log windows in metrics.jsonl,

    train s = sum_w (step_w - step_{w-1}) / steps_per_sec_w,

and the latent side's `total s` adds the autoencoder's `AE s` (measured the same way; the export's pass over the
training split for s is not in it). On a machine with a steady load train s and total s are the figures to
compare; where other jobs come and go, the loops see loads the probes did not, and the probe-timed budgets
(`budget`, run back to back on an idle machine) are. With --equal_total the pixel side's budget is --budget_s
plus AE s, so the two sides' totals match; without it both get --budget_s (equal score-model time).

Columns per side:
    steps, ms/step   n_iters and the probe's median ms per optimiser step (the latent one includes encoding the
                     batch with the frozen encoder, which this framework does on the fly);
    GFLOP/step       XLA's cost analysis of the compiled train step;
    img/s            sampling throughput: --throughput_batch images by the side's sampler (decoding included
                     for latent), median of --throughput_iters calls after a warm-up (random weights: the time
                     does not depend on them);
    FD, KID          of --samples samples (modes.evaluate, EMA parameters) against the train split in the
                     domain classifier's penultimate features (KID's standard error after +-), and `conf`, the
                     share the classifier puts in one class with p > 0.9.
Floors, with as many images as samples (FD is biased upwards at small N): the data's FD(test[:N], train) and
the autoencoder's FD(D(E(test[:N])), train), the best a pixel and a latent model can reach; and the data floor
over the whole 10k test split.

Equal total time (--equal_total): the pixel side's budget is the latent side's plus the autoencoder's seconds.
Measured with both probes on the idle machine (2 CPU cores), the loops afterwards on the same machine shared with
other jobs (so `train s` shows that load, pixel 3844 s and latent 1358 s; the probe-timed budget is the one to
compare); the autoencoder and classifier are benchmarks/autoencoder_quality.py's (600 steps; its 466 s were timed
on a loaded machine, so charging them in full is, if anything, generous to the pixel side):

    python -m benchmarks.pixel_vs_latent --budget_s 800 --equal_total --samples 500 \
        --autoencoder_dir /tmp/ae14/runs/kl --classifier_dir /tmp/ae14/runs/classifier --workdir /tmp/pvl2

    Fashion-MNIST, probe-timed training budgets: pixel 1266 s = latent 800 s + the autoencoder's 466 s, on cpu;
    batch 64; 500 samples by 50-step DDIM; FD / KID against the train split in the domain classifier's features
    side    budget  steps  ms/step GFLOP/step  train s   AE s  total s    img/s       FD                KID  conf
    pixel     1266   1420    891.7     68.940     3844      0     3844      2.4   60.877   16.0059 +- 1.3090  0.23
    latent     800   4029    198.6     13.545     1358    466     1824     14.6   15.704    4.8451 +- 1.0066  0.37
    data floor FD(test[:500], train)                      2.507   KID 0.1038 +- 0.5051   conf 0.65
    autoencoder floor FD(D(E(test[:500])), train)         5.043   KID 0.3574 +- 0.4051   conf 0.57
    data floor FD(test (all 10000), train)                0.106   KID -0.0057 +- 0.2681   conf 0.66

At equal total time the latent model reaches FD 15.7 (3.1x its autoencoder's floor) against the pixel model's
60.9, KID 4.8 against 16.0: a latent step costs a fifth of a pixel step's FLOPs at about the same parameter
count, so it takes 2.8x the steps after paying for the autoencoder, and its samples come 6x faster with decoding.

An earlier run at equal score-model budget (600 s a side, probes and loops on a loaded machine):

    pixel      134   4483.4     68.940      554      0      554      0.9  169.332   37.4025 +- 2.3346  0.13
    latent     754    796.0     13.545      951    466     1417      5.3   51.238   15.6753 +- 1.6872  0.22

A smoke run of every stage (its figures mean nothing; about 10 min):

    python -m benchmarks.pixel_vs_latent --budget_s 30 --samples 50 --eval_batch 50 --sampling_steps 10 \
        --kid_subsets 10 --probe_steps 3 --throughput_batch 10 --throughput_iters 1 --ae_steps 10 \
        --classifier_steps 20 --workdir /tmp/pvl14/smoke
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: the repo root, not benchmarks/, goes first
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import datasets  # noqa: E402
import models  # noqa: E402
import sde_lib  # noqa: E402
import tasks  # noqa: E402
from benchmarks import common  # noqa: E402
from configs.autoencoder import kl_fashion_mnist  # noqa: E402
from configs.latent import ddpm_fashion_mnist as latent_config  # noqa: E402
from configs.vp import ddpm_fashion_mnist as pixel_config  # noqa: E402
from evaluation import features  # noqa: E402
from modes.evaluate import evaluate, quality  # noqa: E402
from modes.train import train, train_classifier  # noqa: E402
from tasks.latent import load_export, score_space  # noqa: E402
from tasks.score import make_sample_fn  # noqa: E402
from training import parallel  # noqa: E402
from training.files import atomic_write_json  # noqa: E402
from training.loop import fuse_steps  # noqa: E402
from training.state import create_train_state  # noqa: E402
from training.validation import ConfigError  # noqa: E402

SIDES = {"pixel": pixel_config, "latent": latent_config}


def loop_seconds(workdir: str) -> float:
    """Seconds the training loop of `workdir` ran: sum over its log windows of (steps in it) / steps_per_sec."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise ConfigError(f"{path} is missing: the run's training time is unknown; pass it (--autoencoder_s).")
    seconds, last = 0.0, 0
    with open(path) as f:
        for record in map(json.loads, f):
            if "steps_per_sec" in record:
                seconds += (record["step"] - last) / record["steps_per_sec"]
                last = record["step"]
    return seconds


def cached(path: str, key: dict, compute) -> dict:
    """compute()'s dict, kept in the JSON file `path` and reused while it was made with the same `key`."""
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        if saved["key"] == key:
            return saved["value"]
    value = compute()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_json(path, {"key": key, "value": value})
    return value


def side_config(side: str, args, autoencoder_dir: str, classifier_dir: str):
    """The side's config with this benchmark's EMA, sampler and evaluation settings (n_iters set by set_steps)."""
    config = SIDES[side].get_config()
    config.latent.autoencoder_dir = autoencoder_dir if side == "latent" else ""
    config.training.snapshot_sampling = False
    config.training.eval_freq = 0  # the budget is for training steps only
    config.model.update(ema_rate=0.999, ema_warmup=True)
    config.sampling.update(method="ddim", eta=0.0, num_steps=args.sampling_steps)
    config.eval.update(enable_loss=False, enable_sampling=True, enable_bpd=False, enable_bound=False,
                       num_samples=args.samples, batch_size=args.eval_batch, classifier_dir=classifier_dir,
                       kid_subsets=args.kid_subsets, stats_dir=os.path.join(args.workdir, "stats"))
    config.classifier.n_iters = args.classifier_steps
    return config


def set_steps(config, n_iters: int) -> None:
    """Train for n_iters steps, logged in about 20 windows that end exactly at n_iters, one periodic checkpoint."""
    t = config.training
    t.n_iters = t.snapshot_freq = n_iters
    t.log_freq = math.gcd(n_iters, max(n_iters // 20, 1))


def probe(config, workdir: str, steps: int) -> dict:
    """Median ms per train step (of `steps` timed calls after a warm-up), XLA GFLOP per step, compile seconds,
    of the loop's own train step on the side's first batch; random weights."""
    task = tasks.get_task(config, workdir)
    mesh = parallel.make_mesh()
    state = parallel.replicate(create_train_state(jax.random.PRNGKey(0), common.random_variables(task.net_config),
                                                  task.optimizer), mesh)
    frozen = None if task.frozen is None else parallel.replicate(task.frozen, mesh)
    batch = parallel.shard_batch(next(task.train_data.batches(config.training.batch_size)), mesh, batch_axis=1)
    step = fuse_steps(task.train_step, donate=True)
    compiled, compile_s = common.compile_timed(step, state, batch, frozen)
    holder = [state]

    def run():
        holder[0], step_losses = compiled(holder[0], batch, frozen)
        step_losses.block_until_ready()

    return {"ms_per_step": 1e3 * common.time_calls(run, steps), "gflop_per_step": common.xla_flops(compiled) / 1e9,
            "compile_s": compile_s}


def sampling_rate(config, batch: int, iters: int) -> dict:
    """Images per second of the side's sampler (decoded to pixels), `batch` at a time; random weights."""
    space = score_space(config)
    model = models.get_model(space.net_config)
    sample = make_sample_fn(space.net_config, sde_lib.from_config(config), model, batch, parallel.make_mesh(),
                            decode=space.decode)
    variables = common.random_variables(space.net_config)
    seconds = common.time_calls(lambda: sample(jax.random.PRNGKey(0), variables), iters)
    return {"images_per_s": batch / seconds}


def autoencoder(args) -> tuple[str, float]:
    """(the autoencoder run's folder, its training seconds): --autoencoder_dir's, or one trained here."""
    if args.autoencoder_dir:
        return args.autoencoder_dir, args.autoencoder_s or loop_seconds(args.autoencoder_dir)
    config = kl_fashion_mnist.get_config()
    t = config.training
    t.n_iters = t.snapshot_freq = args.ae_steps
    t.snapshot_freq_for_preemption = min(t.snapshot_freq_for_preemption, args.ae_steps)
    t.log_freq = t.eval_freq = math.gcd(args.ae_steps, max(args.ae_steps // 10, 1))
    config.autoencoder.disc_start = args.ae_steps // 2
    workdir = os.path.join(args.workdir, "autoencoder")
    train(config, workdir)
    return workdir, loop_seconds(workdir)


def floors(config, net, train_stats, test_stats, latents, n: int) -> dict:
    """quality() of the first n test images (the data floor) and of their reconstructions D(E(x)) (the
    autoencoder's floor), against the train split; and the data floor of the whole test split."""
    encode, decode = jax.jit(latents.encode), jax.jit(latents.decode)
    test = datasets.load_split(config, "test", host_index=0, host_count=1)
    recon = []
    for batch in test.ordered_batches(config.eval.batch_size, limit=n):
        x_hat = np.asarray(decode(latents.params, encode(latents.params, batch["image"])))
        recon.append(np.round(x_hat[batch["mask"] > 0] * 255).astype(np.uint8))
    recon = features.compute_features(net, np.concatenate(recon), config.eval.batch_size)
    k = net.num_classes
    return {"data": quality(test_stats["features"][:n], test_stats["logits"][:n], train_stats, config, k),
            "recon": quality(recon["features"], recon["logits"], train_stats, config, k),
            "data_all": quality(test_stats["features"], test_stats["logits"], train_stats, config, k)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget_s", type=float, default=1200, help="training seconds for each side's score model")
    parser.add_argument("--samples", type=int, default=1000, help="samples for FD / KID (and test images of floors)")
    parser.add_argument("--sampling_steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--eval_batch", type=int, default=250, help="samples a round of evaluation")
    parser.add_argument("--kid_subsets", type=int, default=100)
    parser.add_argument("--probe_steps", type=int, default=10, help="timed train steps of the probe")
    parser.add_argument("--throughput_batch", type=int, default=100)
    parser.add_argument("--throughput_iters", type=int, default=3)
    parser.add_argument("--autoencoder_dir", default="", help="a finished KL autoencoder run to reuse")
    parser.add_argument("--autoencoder_s", type=float, default=0,
                        help="its training seconds (0: from its metrics.jsonl)")
    parser.add_argument("--ae_steps", type=int, default=600, help="steps of the autoencoder trained without it")
    parser.add_argument("--classifier_dir", default="", help="a trained Fashion-MNIST domain classifier to reuse")
    parser.add_argument("--classifier_steps", type=int, default=500, help="steps of the one trained without it")
    parser.add_argument("--equal_total", action="store_true",
                        help="give the pixel side --budget_s plus the autoencoder's seconds, the latent side's total")
    parser.add_argument("--workdir", default="runs/pixel_vs_latent")
    args = parser.parse_args()

    classifier_dir = args.classifier_dir or os.path.join(args.workdir, "classifier")
    base = side_config("pixel", args, "", classifier_dir)
    if not args.classifier_dir:
        train_classifier(base, args.workdir)
    net = features.classifier_net(base, args.workdir)
    train_stats, test_stats = (features.split_statistics(base, args.workdir, "stats", net, split)
                               for split in ("train", "test"))
    autoencoder_dir, autoencoder_s = autoencoder(args)
    latents = load_export(autoencoder_dir)
    floor = floors(base, net, train_stats, test_stats, latents, args.samples)

    configs = {side: side_config(side, args, autoencoder_dir, classifier_dir) for side in SIDES}
    speeds = {side: cached(os.path.join(args.workdir, side, "probe.json"), {"batch": config.training.batch_size},
                           lambda: probe(config, os.path.join(args.workdir, side), args.probe_steps))
              for side, config in configs.items()}  # both probes first, back to back, under the same load
    budgets = {"pixel": args.budget_s + (autoencoder_s if args.equal_total else 0.0), "latent": args.budget_s}
    rows = {}
    for side, config in configs.items():
        workdir, speed = os.path.join(args.workdir, side), speeds[side]
        set_steps(config, max(1, round(1e3 * budgets[side] / speed["ms_per_step"])))
        train(config, workdir)
        [result] = evaluate(config, workdir, "eval")
        sampling = cached(os.path.join(workdir, "sampling.json"),
                          {"batch": args.throughput_batch, "steps": args.sampling_steps},
                          lambda: sampling_rate(config, args.throughput_batch, args.throughput_iters))
        train_s = loop_seconds(workdir)
        extra_s = autoencoder_s if side == "latent" else 0.0
        rows[side] = {**speed, **sampling, **result["samples"], "steps": config.training.n_iters,
                      "budget_s": budgets[side], "train_s": train_s,
                      "ae_s": extra_s, "total_s": train_s + extra_s}

    what = (f"pixel {budgets['pixel']:.0f} s = latent {args.budget_s:.0f} s + the autoencoder's {autoencoder_s:.0f} s"
            if args.equal_total else f"{args.budget_s:.0f} s per score model")
    print(f"\nFashion-MNIST, probe-timed training budgets: {what}, on {jax.devices()[0].device_kind}; "
          f"batch {base.training.batch_size}; {args.samples} samples by {args.sampling_steps}-step DDIM; FD / KID "
          f"against the train split in the domain classifier's features (test accuracy {net.test_accuracy:.3f})")
    print(f"{'side':7s} {'budget':>6s} {'steps':>6s} {'ms/step':>8s} {'GFLOP/step':>10s} {'train s':>8s} {'AE s':>6s} "
          f"{'total s':>8s} {'img/s':>8s} {'FD':>8s} {'KID':>18s} {'conf':>5s}")
    for side, r in rows.items():
        print(f"{side:7s} {r['budget_s']:6.0f} {r['steps']:6d} {r['ms_per_step']:8.1f} {r['gflop_per_step']:10.3f} "
              f"{r['train_s']:8.0f} "
              f"{r['ae_s']:6.0f} {r['total_s']:8.0f} {r['images_per_s']:8.1f} {r['fd']:8.3f} "
              f"{r['kid']:9.4f} +- {r['kid_std']:.4f} {r['confident']:5.2f}")
    for name, what in (("data", f"data floor FD(test[:{args.samples}], train)"),
                       ("recon", f"autoencoder floor FD(D(E(test[:{args.samples}])), train)"),
                       ("data_all", f"data floor FD(test (all {floor['data_all']['num_images']}), train)")):
        f = floor[name]
        print(f"{what:50s} {f['fd']:8.3f}   KID {f['kid']:.4f} +- {f['kid_std']:.4f}   conf {f['confident']:.2f}")


if __name__ == "__main__":
    main()
