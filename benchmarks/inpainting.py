"""Inpainting of MNIST test digits: PC replacement on an unconditional model against a trained concat inpainting
model, on the same masks, each scored by FD of the completed images against the train split and by the error on
the known pixels.

    python -m benchmarks.inpainting --config configs/vp/ddpm_mnist.py --workdir W --config.eval.classifier_dir=C \
        [--concat_workdir W_inpaint (configs/concat/sr4_mnist.py --config.concat.kind=inpaint)] [--concat_cfg 0,1]

The flags are benchmarks/superresolution.py's, and so are its samplers (pc_samples, concat_samples). Test image i
of the first n (n = 500, all: the split is sorted by class) loses the pixels of m_i =
data_sources.conditions.inpaint_mask(28, seed, i) (1 = unknown; a box or a brush stroke), seed the concat config's,
so both methods and the trained model's own condition c_i = [x_i (1 - m_i), m_i] see the same masks. Methods:
  zero fill       x (1 - m): the unknown pixels black (the masks' damage, for scale);
  pc replacement  the unconditional model's PC sampler with the known pixels replaced by their forward marginal
                  after every step (samplers.inverse.inpainting, as --mode sample's task 'inpaint'): x_hat keeps
                  them by construction;
  concat model    the concat model's own sampler given c_i (tasks.concat); it is not made to keep the known pixels.
Each output x_hat is completed as x (1 - m) + x_hat m (tasks.concat.complete). Columns:
  FD              of the completed images, in the domain classifier's features against the whole train split,
                  next to the floor FD(test[:n], train);
  max|known|      max over images and known pixels of the completed images' error in uint8 levels (what FD
                  scores; 0: kept exactly);
  raw max, mean   the output x_hat's own error on the known pixels, before completion: the max, and the mean over
                  images of sum (1 - m) |x_hat - x| / (C sum (1 - m)) (modes.concat_eval.task_figures' known_error);
  PSNR unknown    mean over images of 10 log10(1 / (sum m (x_hat - x)^2 / (C sum m))) (evaluation.metrics.image_psnr
                  with the mask): agreement with the erased truth, informative only, as many fills are plausible.

Measured on 2 CPU cores shared with two other heavy jobs (a benchmark and a training run), the quickstart model
of /tmp/qs/r2 (configs/vp/ddpm_mnist.py, 2,000 steps) with PC euler_maruyama + langevin (snr 0.16), 100 steps,
the domain classifier of /tmp/qs/clsrun, and a concat inpainting model trained by the quickstart recipe
(python main.py --config configs/concat/sr4_mnist.py --config.concat.kind=inpaint --mode train --workdir
/tmp/i20/inpaint: 2,000 steps, 9m32s on the same loaded machine) sampled by its config's dpm_solver, 20 steps;
337 s in all:

    python -m benchmarks.inpainting --config configs/vp/ddpm_mnist.py --workdir /tmp/qs/r2 \
        --config.eval.classifier_dir=/tmp/qs/clsrun/classifier --concat_workdir /tmp/i20/inpaint \
        --n 500 --concat_cfg 0,1

    Inpainting of MNIST test[:500]; FD of the completed images against the train split
    15.1% of the pixels unknown
    (notes column left out: both models at step 2000, their samplers as above)
    method                     FD max|known|  raw max  raw mean  PSNR unknown  seconds
    truth (floor)           4.382          0  0.0e+00    0.0000           inf      0.0
    zero fill              22.050          0  0.0e+00    0.0000         24.91      0.0
    pc replacement          7.004          0  1.5e-08    0.0000         17.17    231.7
    concat model            6.843          0  1.0e+00    0.0072         16.51     32.6
    concat model cfg 1      6.464          0  7.8e-01    0.0077         15.45     61.9

Both fill the holes about equally well: FD 7.0 (PC replacement) and 6.8 (the trained model) against the floor's
4.4 and the unfilled images' 22.1, the trained model in a seventh of the time, and cfg weight 1 (twice the network
evaluations) brings it to 6.5. Both completed sets keep every known pixel exactly (max|known| 0 in uint8 levels):
PC replacement's own output already does (1.5e-8, the scaler's float rounding), the trained model's does not (mean
error 0.007 on the known pixels, single pixels off by up to 1.0) and needs the completion x (1 - m) + x_hat m. PSNR
on the erased pixels ranks the zero fill first (24.9 dB: most of an MNIST hole is black background) and falls with
guidance: a plausible stroke in the wrong place costs more than no stroke, so it says little about quality here.
A second run with --concat_cfg 3 (334 s; the PC row the same to the digit) gave the concat model FD 7.289, raw
max 9.7e-01, raw mean 0.0092, PSNR unknown 13.16 dB, 55.5 s: past w = 1 guidance makes the fills worse.
"""
from __future__ import annotations

import os
import sys
import time

if __name__ == "__main__" and not __package__:  # run as a file: the repo root, not benchmarks/, goes first
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import functools  # noqa: E402

import numpy as np  # noqa: E402
from absl import app  # noqa: E402

from benchmarks.common import fd_to_train  # noqa: E402
from benchmarks.superresolution import FLAGS, concat_config, concat_rows, pc_config, pc_samples, setup  # noqa: E402
from datasets import to_uint8  # noqa: E402
from evaluation.metrics import image_psnr  # noqa: E402
from modes.concat_eval import task_figures  # noqa: E402
from samplers import inverse  # noqa: E402
from tasks import concat  # noqa: E402


def inpaint_conditions(truth) -> np.ndarray:
    """The concat config's inpaint conditions [x (1 - m), m] of the truth images, their test indices 0 .. n - 1."""
    return np.asarray(concat.condition_fn(concat_config("inpaint"))(truth, np.arange(len(truth))))


def pc_inpainting(config, workdir: str, truth, condition, step: int = 0):
    """PC replacement samples of workdir's model keeping each image's known pixels 1 - m of its inpaint condition
    [x (1 - m), m], a chunk's masks in its observation; returns (samples, step)."""
    known = 1.0 - condition[..., -1:]
    return pc_samples(config, workdir, truth, lambda rows: functools.partial(inverse.inpainting, mask=known[rows]),
                      step)


def main(_):
    config, truth, net, train = setup()
    condition = inpaint_conditions(truth)
    rows = [("truth (floor)", truth, 0.0, ""), ("zero fill", condition[..., :-1], 0.0, "")]
    start = time.perf_counter()
    x, step = pc_inpainting(pc_config(config), FLAGS.workdir, truth, condition, FLAGS.step)
    rows.append(("pc replacement", x, time.perf_counter() - start,
                 f"step {step}, {FLAGS.predictor}+{FLAGS.corrector}, {FLAGS.pc_steps} steps"))
    if FLAGS.concat_workdir:
        for name, x, used, seconds, notes in concat_rows(truth, "inpaint"):
            if not np.array_equal(used, condition):
                raise AssertionError("The concat model was conditioned on other masks than the PC sampler's.")
            rows.append((name, x, seconds, notes))

    print(f"Inpainting of MNIST test[:{FLAGS.n}] ({net.description}); FD of the completed images against the train "
          f"split")
    report(rows, truth, condition, lambda images: fd_to_train(config, net, train, images))


def report(rows, truth, condition, fd) -> None:
    """Print the table (module docstring) of rows (name, outputs x_hat in [0, 1], seconds, notes) for the truth
    images and their inpaint conditions [x (1 - m), m]; fd(images) -> FD against the train split."""
    m, inpaint = condition[..., -1:], concat_config("inpaint")
    print(f"{np.mean(m):.1%} of the pixels unknown")
    print(f"{'method':<20}{'FD':>9}{'max|known|':>11}{'raw max':>9}{'raw mean':>10}{'PSNR unknown':>14}"
          f"{'seconds':>9}  notes")
    for name, images, seconds, notes in rows:
        completed = concat.complete(condition, images)
        scored = int(np.max((1 - m) * np.abs(to_uint8(completed).astype(int) - to_uint8(truth))))
        raw_max = np.max((1 - m) * np.abs(images - truth))
        raw_mean = np.mean(task_figures(inpaint, images, truth, condition)["known_error"])
        psnr = float(np.mean(image_psnr(truth, images, m))) if name != "truth (floor)" else float("inf")
        print(f"{name:<20}{fd(completed):>9.3f}{scored:>11d}{raw_max:>9.1e}{raw_mean:>10.4f}{psnr:>14.2f}"
              f"{seconds:>9.1f}  {notes}")


if __name__ == "__main__":
    app.run(main)
