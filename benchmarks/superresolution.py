"""4x super-resolution of MNIST test digits: bicubic upsampling, PC replacement on an unconditional model, and a
trained concat model, each scored by PSNR against the high-resolution truth and FD against the train split.

    python -m benchmarks.superresolution --config configs/vp/ddpm_mnist.py --workdir W \
        --config.eval.classifier_dir=C [--concat_workdir W4 (configs/concat/sr4_mnist.py)] [--concat_cfg 0,1]

The observation is y = A_4 x, each 4x4 block's mean (data_sources.conditions.area_downsample), of the first n
test images x. Methods:
  bicubic   B(y): y brought back to 28x28 by jax.image.resize 'cubic', clipped (modes.concat_eval.bicubic);
  pc        the unconditional model's PC sampler with the block means replaced by their forward marginal after
            every step (samplers.inverse.superresolution), so A_4 x_hat = y exactly;
  concat    the concat model's own sampler, conditioned on U_4(y) (tasks.concat), a row per cfg weight w of
            --concat_cfg, (1 + w) s(x | U_4 y) - w s(x | null image);
and, for reference, the same PC sampler without the observation (random digits: the PSNR of a guess that
ignores y, and the sampler's own FD).
PSNR_b = 10 log10(1 / mean (x_b - x_hat_b)^2) averaged over the images (evaluation.metrics.image_psnr); FD is in
the domain classifier's features against the whole train split, next to the floor FD(test[:n], train);
max|A x - y| is the largest block-mean error after the outputs' clip to [0, 1].

The test split is sorted by class (its first 200 images are the digits 0-3), so take n = 500, all of it: fewer
images carry a class mix of their own into FD against the balanced train split.

Measured on 2 CPU cores shared with two other heavy jobs (a benchmark and a training run), the quickstart model
of /tmp/qs/r2 (configs/vp/ddpm_mnist.py, 2,000 steps), the domain classifier of /tmp/qs/clsrun, PC with
euler_maruyama + langevin (snr 0.16), 100 steps, and a concat model trained by the quickstart recipe
(python main.py --config configs/concat/sr4_mnist.py --mode train --workdir /tmp/i20/sr4: 2,000 steps, 8m48s on
the same loaded machine), sampled by its config's dpm_solver, 20 steps; 526 s in all:

    python -m benchmarks.superresolution --config configs/vp/ddpm_mnist.py --workdir /tmp/qs/r2 \
        --config.eval.classifier_dir=/tmp/qs/clsrun/classifier --concat_workdir /tmp/i20/sr4 --n 500 --concat_cfg 0,1

    4x super-resolution of MNIST test[:500]; FD against the train split
    method                PSNR dB  max|A x-y|       FD  seconds  notes
    truth (floor)             inf      0.0000    4.382      0.0
    bicubic                 14.47      0.2167   54.341      0.3
    pc replacement          14.93      0.0795   10.015    215.7  step 2000, euler_maruyama+langevin, 100 steps
    pc unconstrained         9.03      0.9879   22.988    208.5  step 2000, euler_maruyama+langevin, 100 steps
    concat model            17.97      0.5353    5.076     28.5  step 2000, dpm_solver 20 steps
    concat model cfg 1      19.23      0.0609    4.835     61.8  step 2000, dpm_solver 20 steps

(the PC rows are those of the earlier run, to the digit: the same seeds). PC replacement beats bicubic by 0.5 dB and
keeps the block means up to the clip (bicubic's cubic kernel does not keep them), and its digits are far sharper: FD
10.0 against bicubic's 54.3, within 2.3x the floor and below the sampler's own 23.0 (the observation steers it to
the test digits). The trained concat model, given the same block means as an input channel, is far better in PSNR
and FD at about an eighth of the time: 3.0 dB above PC replacement and FD 5.1, at the floor's 1.16x. It is not made
to keep the block means (the worst of the 24,500 blocks is off by 0.54 unguided); cfg guidance of weight 1 against
the null image, at twice the network evaluations, brings that to 0.06, PSNR to 19.2 dB and FD to 4.8. A second run
with --concat_cfg 3 (532 s; the other rows the same to the digit) gave 19.62 dB, max|A x-y| 0.0849, FD 5.200 in 52.3
s: PSNR still rises with w, FD has passed its best. At n = 200 (digits 0-3, an earlier run without the concat rows):
PSNR 15.42 against 14.74, FD 167 and 197 against the truth's 223.
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
from benchmarks.common import chunk_rows, fd_to_train, load_config, restore_ema, sample_in_chunks  # noqa: E402
from data_sources import conditions  # noqa: E402
from evaluation import features  # noqa: E402
from evaluation.metrics import image_psnr  # noqa: E402
from modes.concat_eval import bicubic  # noqa: E402
from modes.concat_sample import make_guide  # noqa: E402
from samplers import inverse  # noqa: E402
from tasks import concat  # noqa: E402
from tasks.score import make_sample_fn  # noqa: E402

config_flags.DEFINE_config_file("config", None, "The unconditional model's config file.")
flags.DEFINE_string("workdir", None, "The unconditional model's --workdir.")
flags.DEFINE_string("concat_workdir", "", "A trained configs/concat/sr4_mnist.py run's --workdir (optional), of the "
                    "benchmark's kind: lowres here, --config.concat.kind=inpaint for benchmarks.inpainting.")
flags.DEFINE_integer("n", 500, "Test images (the split is sorted by class: keep all 500).")
flags.DEFINE_integer("factor", 4, "Downsampling factor k.")
flags.DEFINE_integer("step", 0, "Checkpoint step of the unconditional model (0: the newest).")
flags.DEFINE_string("predictor", "euler_maruyama", "PC predictor.")
flags.DEFINE_string("corrector", "langevin", "PC corrector.")
flags.DEFINE_integer("pc_steps", 100, "PC steps.")
flags.DEFINE_list("concat_cfg", ["0"], "cfg guidance weights w of the concat model, a row each (0: none).")
flags.DEFINE_string("stats_dir", "/tmp/sr20/stats", "Where the train split's feature statistics are kept.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def pc_config(config):
    """config with its sampler set to --predictor, --corrector, --pc_steps (the PC rows' sampler)."""
    config = config.copy_and_resolve_references()
    config.sampling.update(method="pc", predictor=FLAGS.predictor, corrector=FLAGS.corrector,
                           num_steps=FLAGS.pc_steps)
    return config


def pc_samples(config, workdir: str, truth, observe=None, step: int = 0):
    """The PC samples of an unconditional model (workdir's checkpoint of `step`, 0: the newest; config's sampler),
    one per truth image: plain ones (observe None: a guess that ignores the observation, for reference), or PC
    replacement with observe(rows), make_sample_fn's observe for the images truth[rows] of one chunk (rows:
    chunk_rows). A chunk compiles its sampler again only when observe gives a new object: once for
    super-resolution's one operator, per chunk for inpainting's per-image masks. Returns (samples, step)."""
    model, variables, sde, mesh, step = restore_ema(config, workdir, step)
    n, chunk = len(truth), min(len(truth), config.eval.batch_size)
    out, sample_fn, built = [], None, None
    for start in range(0, n, chunk):
        obs = None if observe is None else observe(chunk_rows(start, chunk, n))
        if sample_fn is None or obs is not built:
            sample_fn, built = make_sample_fn(config, sde, model, chunk, mesh, observe=obs), obs
        part = truth[start:start + chunk]
        out.append(sample_in_chunks(sample_fn, variables, chunk, len(part), config.seed,
                                    known=None if observe is None else part, offset=start))
    return np.concatenate(out), step


def concat_config(kind: str, factor: int = 4):
    """configs/concat/sr4_mnist.py with config.concat.kind = kind ('lowres' by `factor`, or 'inpaint')."""
    config = load_config("concat/sr4_mnist")
    config.concat.update(kind=kind, factor=factor)
    return config


def concat_samples(truth, kind: str, guidance_weight: float = 0.0):
    """The trained concat model's (FLAGS.concat_workdir, configs/concat/sr4_mnist.py with config.concat.kind =
    kind) samples, one per condition c = condition(x, index) of the truth images (their test indices 0 .. n - 1,
    so inpainting masks are data_sources.conditions.inpaint_mask(size, config.seed, index)), with its config's
    own sampler, under cfg guidance of weight w against the null image when w != 0. Returns (samples,
    conditions, checkpoint step)."""
    config = concat_config(kind, FLAGS.factor)
    if guidance_weight:
        config.sampling.update(guidance="cfg", guidance_weight=guidance_weight)
    model, variables, sde, mesh, step = restore_ema(config, FLAGS.concat_workdir)
    chunk = min(len(truth), config.eval.batch_size)
    sample_fn = make_sample_fn(config, sde, model, chunk, mesh, guide=make_guide(config))
    condition = np.asarray(concat.condition_fn(config)(truth, np.arange(len(truth))))
    return sample_in_chunks(sample_fn, variables, chunk, len(truth), config.seed,
                            concat=np.asarray(concat.to_denoiser(condition, config))), condition, step


def concat_rows(truth, kind: str):
    """(name, samples, conditions, seconds, notes) of the concat model under each --concat_cfg weight."""
    rows, s = [], concat_config(kind).sampling
    for w in FLAGS.concat_cfg:
        start = time.perf_counter()
        x, condition, step = concat_samples(truth, kind, float(w))
        name = "concat model" + (f" cfg {float(w):g}" if float(w) else "")
        rows.append((name, x, condition, time.perf_counter() - start, f"step {step}, {s.method} {s.num_steps} steps"))
    return rows


def setup():
    """(config, truth: the first --n test images in [0, 1], the feature net, the train split's statistics)."""
    config = FLAGS.config
    config.eval.stats_dir = FLAGS.stats_dir
    test = datasets.load_split(config, "test", host_index=0, host_count=1)
    truth = test.source.read(np.arange(FLAGS.n))[0] / np.float32(255)
    net = features.classifier_net(config, FLAGS.workdir)
    return config, truth, net, features.split_statistics(config, FLAGS.workdir, "", net, "train")


def main(_):
    config, truth, net, train = setup()
    rows = [("truth (floor)", truth, 0.0, "")]
    start = time.perf_counter()
    rows.append(("bicubic", bicubic(truth, FLAGS.factor), time.perf_counter() - start, ""))
    operator = functools.partial(inverse.superresolution, factor=FLAGS.factor)
    for name, observe in (("pc replacement", lambda rows: operator), ("pc unconstrained", None)):
        start = time.perf_counter()
        x, step = pc_samples(pc_config(config), FLAGS.workdir, truth, observe, FLAGS.step)
        rows.append((name, x, time.perf_counter() - start,
                     f"step {step}, {FLAGS.predictor}+{FLAGS.corrector}, {FLAGS.pc_steps} steps"))
    if FLAGS.concat_workdir:
        rows += [(name, x, seconds, notes) for name, x, _, seconds, notes in concat_rows(truth, "lowres")]

    print(f"{FLAGS.factor}x super-resolution of MNIST test[:{FLAGS.n}] ({net.description}); FD against the train "
          f"split")
    print(f"{'method':<20}{'PSNR dB':>9}{'max|A x-y|':>12}{'FD':>9}{'seconds':>9}  notes")
    for name, images, seconds, notes in rows:
        psnr = float(np.mean(image_psnr(truth, images))) if name != "truth (floor)" else float("inf")
        err = np.max(np.abs(conditions.area_downsample(images, FLAGS.factor)
                            - conditions.area_downsample(truth, FLAGS.factor)))
        print(f"{name:<20}{psnr:>9.2f}{err:>12.4f}{fd_to_train(config, net, train, images):>9.3f}"
              f"{seconds:>9.1f}  {notes}")


if __name__ == "__main__":
    app.run(main)
