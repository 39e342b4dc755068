"""img2img (SDEdit) on MNIST test digits: how far the outputs move from their inputs, and how diverse they are,
as the strength goes from 0.2 to 1.

    python -m benchmarks.img2img_strength --config configs/vp/ddpm_mnist.py --workdir W \
        --config.eval.classifier_dir=C [--n 200]

Each of the first n test images x is noised to time t_s = s T by the forward marginal, x_s = alpha(t_s) x +
sigma(t_s) z, and denoised by the model's own sampler on round(s num_steps) steps (make_sample_fn(...,
strength=s), as --mode sample's img2img). Reported per strength: the mean over images of the RMS distance
d = sqrt(mean_{h,w,c} (x_hat - x)^2) of output to input in [0, 1], and FD of the outputs against the train
split in the domain classifier's features; next to them FD of n unconditional samples of the same sampler and
the floor FD(test[:n], train) (the unconditional row's d is to the unrelated test image of the same index). d
must grow with s; at s = 1 the start alpha(T) x + sigma(T) z is the prior up to
alpha(T) ~ 0, so the outputs should be as diverse as unconditional samples (FD alike).

The test split is sorted by class (its first 200 images are the digits 0-3), so take n = 500, all of it: fewer
inputs carry a class mix of their own into FD against the balanced train split.

Measured on 2 shared CPU cores (other jobs running), the quickstart model of /tmp/qs/r2 (configs/vp/ddpm_mnist.py,
2,000 steps, DPM-Solver++(2M), 20 steps at s = 1), the domain classifier of /tmp/qs/clsrun:

    python -m benchmarks.img2img_strength --config configs/vp/ddpm_mnist.py --workdir /tmp/qs/r2 \
        --config.eval.classifier_dir=/tmp/qs/clsrun/classifier --n 500

    strength          RMS dist       FD  seconds
    test (floor)        0.0000    4.382
    0.2                 0.0792    4.632     22.3
    0.4                 0.1734    8.589     32.2
    0.6                 0.2943   29.168     47.6
    0.8                 0.3462   31.152     58.9
    1.0                 0.3622   29.486     60.9
    unconditional       0.3653   29.493     49.9

d grows with s (0.08 to 0.36, the last next to the 0.365 between unrelated digits); FD rises from the floor to
the model's own and at s = 1 is the unconditional samples' (29.486 against 29.493). At n = 200 (digits 0-3) the
same run gave d 0.078, 0.170, 0.296, 0.352, 0.369 and FD at s = 1 35.68 against 35.71 unconditional.
"""
from __future__ import annotations

import os
import sys
import time

if __name__ == "__main__" and not __package__:  # run as a file: the repo root, not benchmarks/, goes first
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import datasets  # noqa: E402
from benchmarks.common import fd_to_train, restore_ema, sample_in_chunks  # noqa: E402
from evaluation import features  # noqa: E402
from tasks.score import make_sample_fn  # noqa: E402

config_flags.DEFINE_config_file("config", None, "The model's config file.")
flags.DEFINE_string("workdir", None, "The model's --workdir.")
flags.DEFINE_integer("n", 200, "Test images (and unconditional samples).")
flags.DEFINE_integer("step", 0, "Checkpoint step (0: the newest).")
flags.DEFINE_list("strengths", ["0.2", "0.4", "0.6", "0.8", "1.0"], "img2img strengths.")
flags.DEFINE_string("stats_dir", "/tmp/sr20/stats", "Where the train split's feature statistics are kept.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(_):
    config = FLAGS.config
    config.eval.stats_dir = FLAGS.stats_dir
    inputs = datasets.load_split(config, "test", host_index=0, host_count=1).source.read(
        np.arange(FLAGS.n))[0] / np.float32(255)
    net = features.classifier_net(config, FLAGS.workdir)
    train = features.split_statistics(config, FLAGS.workdir, "", net, "train")
    model, variables, sde, mesh, step = restore_ema(config, FLAGS.workdir, FLAGS.step)
    chunk = min(FLAGS.n, config.eval.batch_size)

    def row(name, strength):
        """Sample with `strength` (None: unconditionally) and print d, FD and the seconds spent sampling."""
        sample_fn = make_sample_fn(config, sde, model, chunk, mesh, strength=strength)
        start = time.perf_counter()
        x = sample_in_chunks(sample_fn, variables, chunk, FLAGS.n, config.seed,
                             known=None if strength is None else inputs)
        seconds = time.perf_counter() - start
        distance = np.mean(np.sqrt(np.mean((x - inputs) ** 2, axis=(1, 2, 3))))
        print(f"{name:<16}{distance:>10.4f}{fd_to_train(config, net, train, x):>9.3f}{seconds:>9.1f}")

    print(f"img2img on MNIST test[:{FLAGS.n}], checkpoint {step}, {config.sampling.method} "
          f"{config.sampling.num_steps or 'default'} steps at strength 1 ({net.description}); FD against the train "
          f"split")
    print(f"{'strength':<16}{'RMS dist':>10}{'FD':>9}{'seconds':>9}")
    print(f"{'test (floor)':<16}{0.0:>10.4f}{fd_to_train(config, net, train, inputs):>9.3f}")
    for s in FLAGS.strengths:
        row(s, float(s))
    row("unconditional", None)


if __name__ == "__main__":
    app.run(main)
