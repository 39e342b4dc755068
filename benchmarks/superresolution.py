"""4x super-resolution of MNIST test digits: bicubic upsampling, PC replacement on an unconditional model, and a
trained concat model, each scored by PSNR against the high-resolution truth and FD against the train split.

    python -m benchmarks.superresolution --config configs/vp/ddpm_mnist.py --workdir W \
        --config.eval.classifier_dir=C [--concat_workdir W4 (configs/concat/sr4_mnist.py)] [--n 200]

The observation is y = A_4 x, each 4x4 block's mean (data_sources.conditions.area_downsample), of the first n
test images x. Methods:
  bicubic   B(y): y brought back to 28x28 by jax.image.resize 'cubic', clipped (modes.concat_eval.bicubic);
  pc        the unconditional model's PC sampler with the block means replaced by their forward marginal after
            every step (samplers.inverse.superresolution), so A_4 x_hat = y exactly;
  concat    the concat model's own sampler, conditioned on U_4(y) (tasks.concat);
and, for reference, the same PC sampler without the observation (random digits: the PSNR of a guess that
ignores y, and the sampler's own FD).
PSNR_b = 10 log10(1 / mean (x_b - x_hat_b)^2) averaged over the images (evaluation.metrics.image_psnr); FD is in
the domain classifier's features against the whole train split, next to the floor FD(test[:n], train);
max|A x - y| is the largest block-mean error after the outputs' clip to [0, 1].

The test split is sorted by class (its first 200 images are the digits 0-3), so take n = 500, all of it: fewer
images carry a class mix of their own into FD against the balanced train split.

Measured on 2 shared CPU cores (other jobs running), the quickstart model of /tmp/qs/r2 (configs/vp/ddpm_mnist.py,
2,000 steps), the domain classifier of /tmp/qs/clsrun, PC with euler_maruyama + langevin (snr 0.16), 100 steps:

    python -m benchmarks.superresolution --config configs/vp/ddpm_mnist.py --workdir /tmp/qs/r2 \
        --config.eval.classifier_dir=/tmp/qs/clsrun/classifier --n 500

    4x super-resolution of MNIST test[:500]; FD against the train split
    method            PSNR dB  max|A x-y|       FD  seconds
    truth (floor)         inf      0.0000    4.382      0.0
    bicubic             14.47      0.2167   54.341      0.5
    pc replacement      14.93      0.0795   10.015    331.1
    pc unconstrained     9.03      0.9879   22.988    200.9

PC replacement beats bicubic by 0.5 dB and keeps the block means up to the clip (bicubic's cubic kernel does not
keep them), and its digits are far sharper: FD 10.0 against bicubic's 54.3, within 2.3x the floor and below the
sampler's own 23.0 (the observation steers it to the test digits). At n = 200 (digits 0-3): PSNR 15.42 against
14.74, FD 167 and 197 against the truth's 223.
"""
from __future__ import annotations

import functools
import os
import sys
import time

if __name__ == "__main__" and not __package__:  # run as a file: the repo root, not benchmarks/, goes first
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import datasets  # noqa: E402
from benchmarks.common import fd_to_train, load_config, restore_ema, sample_in_chunks  # noqa: E402
from data_sources import conditions  # noqa: E402
from evaluation import features  # noqa: E402
from evaluation.metrics import image_psnr  # noqa: E402
from modes.concat_eval import bicubic  # noqa: E402
from samplers import inverse  # noqa: E402
from tasks import concat  # noqa: E402
from tasks.score import make_sample_fn  # noqa: E402

config_flags.DEFINE_config_file("config", None, "The unconditional model's config file.")
flags.DEFINE_string("workdir", None, "The unconditional model's --workdir.")
flags.DEFINE_string("concat_workdir", "", "A trained configs/concat/sr4_mnist.py run's --workdir (optional).")
flags.DEFINE_integer("n", 200, "Test images.")
flags.DEFINE_integer("factor", 4, "Downsampling factor k.")
flags.DEFINE_integer("step", 0, "Checkpoint step of the unconditional model (0: the newest).")
flags.DEFINE_string("predictor", "euler_maruyama", "PC predictor.")
flags.DEFINE_string("corrector", "langevin", "PC corrector.")
flags.DEFINE_integer("pc_steps", 100, "PC steps.")
flags.DEFINE_string("stats_dir", "/tmp/sr20/stats", "Where the train split's feature statistics are kept.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def pc_samples(config, truth, constrained: bool = True):
    """The unconditional model's PC samples, one per truth image: by PC replacement, whose k x k block means are
    the truth's (constrained), or plain ones (the sampler's own PSNR and FD, for reference)."""
    config = config.copy_and_resolve_references()
    config.sampling.update(method="pc", predictor=FLAGS.predictor, corrector=FLAGS.corrector,
                           num_steps=FLAGS.pc_steps)
    model, variables, sde, mesh, step = restore_ema(config, FLAGS.workdir, FLAGS.step)
    chunk = min(len(truth), config.eval.batch_size)
    observe = functools.partial(inverse.superresolution, factor=FLAGS.factor) if constrained else None
    sample_fn = make_sample_fn(config, sde, model, chunk, mesh, observe=observe)
    return sample_in_chunks(sample_fn, variables, chunk, len(truth), config.seed,
                            known=truth if constrained else None), step


def concat_superresolution(truth):
    """The trained concat model's samples given U_k(A_k x), with its config's own sampler."""
    config = load_config("concat/sr4_mnist")
    config.concat.factor = FLAGS.factor
    model, variables, sde, mesh, step = restore_ema(config, FLAGS.concat_workdir)
    chunk = min(len(truth), config.eval.batch_size)
    sample_fn = make_sample_fn(config, sde, model, chunk, mesh)
    condition = conditions.lowres(truth, FLAGS.factor, config.concat.upsample)
    return sample_in_chunks(sample_fn, variables, chunk, len(truth), config.seed,
                            concat=np.asarray(concat.to_denoiser(condition, config))), step


def main(_):
    config = FLAGS.config
    config.eval.stats_dir = FLAGS.stats_dir
    test = datasets.load_split(config, "test", host_index=0, host_count=1)
    truth = test.source.read(np.arange(FLAGS.n))[0] / np.float32(255)
    net = features.classifier_net(config, FLAGS.workdir)
    train = features.split_statistics(config, FLAGS.workdir, "", net, "train")

    rows = [("truth (floor)", truth, 0.0, "")]
    start = time.perf_counter()
    rows.append(("bicubic", bicubic(truth, FLAGS.factor), time.perf_counter() - start, ""))
    for name, constrained in (("pc replacement", True), ("pc unconstrained", False)):
        start = time.perf_counter()
        x, step = pc_samples(config, truth, constrained)
        rows.append((name, x, time.perf_counter() - start,
                     f"step {step}, {FLAGS.predictor}+{FLAGS.corrector}, {FLAGS.pc_steps} steps"))
    if FLAGS.concat_workdir:
        start = time.perf_counter()
        x, step = concat_superresolution(truth)
        rows.append(("concat model", x, time.perf_counter() - start, f"step {step}, its config's sampler"))

    print(f"{FLAGS.factor}x super-resolution of MNIST test[:{FLAGS.n}] ({net.description}); FD against the train "
          f"split")
    print(f"{'method':<16}{'PSNR dB':>9}{'max|A x-y|':>12}{'FD':>9}{'seconds':>9}  notes")
    for name, images, seconds, notes in rows:
        psnr = float(np.mean(image_psnr(truth, images))) if name != "truth (floor)" else float("inf")
        err = np.max(np.abs(conditions.area_downsample(images, FLAGS.factor)
                            - conditions.area_downsample(truth, FLAGS.factor)))
        print(f"{name:<16}{psnr:>9.2f}{err:>12.4f}{fd_to_train(config, net, train, images):>9.3f}"
              f"{seconds:>9.1f}  {notes}")


if __name__ == "__main__":
    app.run(main)
