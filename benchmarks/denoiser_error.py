"""How well a trained pixel score model denoises, noise level by noise level: why a probability-flow ODE fails.

    python -m benchmarks.denoiser_error --config configs/vp/ddpm_mnist.py --workdir runs/mnist [--config.* ...]
                                        [--images 500] [--step 0]

For the newest (or --step) checkpoint's EMA parameters and the first --images test images x_0 in the model's
range, at EDM noise levels sigma_e = sigma(t) / alpha(t) from 0.02 to 80 it draws x_t = alpha x_0 + sigma z and
prints the mean squared error per pixel of Tweedie's denoiser

    D(x_t, t) = (x_t + sigma^2 s(x_t, t)) / alpha = E[x_0 | x_t]   (samplers.common.denoiser),

over all pixels, over the background (x_0 = -1, the data's lower bound) and over the rest, next to the error of
the train split's mean image, E||x_0 - mean||^2 / D, which the ideal D approaches as sigma_e grows. A
deterministic sampler (DDIM with eta 0, DPM-Solver, Heun, the ODE) builds its sample from D at every level and
keeps what the first, high-noise steps put in; ancestral sampling adds fresh noise at each step and forgets it.
So an error of D far above the mean image's at high sigma_e shows up in ODE samples and not in ancestral ones.

A discrete-time model (config.training.continuous False) is evaluated at the times its chain has (its
perturbation_coeffs), the nearest to each sigma_e; the table gives the sigma_e used.
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: the repo root, not benchmarks/, goes first
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import datasets  # noqa: E402
import models  # noqa: E402
import sde_lib  # noqa: E402
from models.score_fn import get_score_fn  # noqa: E402
from modes.sample import newest_checkpoint  # noqa: E402
from tasks.score import restore_train_state  # noqa: E402
from training import parallel  # noqa: E402
from training.checkpoint import Checkpointer  # noqa: E402

config_flags.DEFINE_config_file("config", None, "The run's config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "The run's --workdir.")
flags.DEFINE_integer("images", 500, "Test images scored at each noise level.")
flags.DEFINE_integer("step", 0, "Checkpoint step (0: the newest).")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS

NOISE_LEVELS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 80.0)


def nearest_time(sde, level: float, continuous: bool) -> float:
    """The time in [eps, T] whose model noise level sigma / alpha is nearest to `level` in log scale."""
    ts = jnp.linspace(1e-3, sde.T, 4000)
    alpha, sigma = sde.perturbation_coeffs(ts, continuous)
    return float(ts[jnp.argmin(jnp.abs(jnp.log(sigma / alpha) - np.log(level)))])


def main(_):
    config, workdir = FLAGS.config, FLAGS.workdir
    if config.latent.autoencoder_dir:
        raise SystemExit("denoiser_error scores pixel models; this config is a latent one.")
    sde, model, mesh = sde_lib.from_config(config), models.get_model(config), parallel.make_mesh()
    step = FLAGS.step or newest_checkpoint(config, workdir)
    with Checkpointer(workdir) as checkpointer:
        state = restore_train_state(checkpointer, step, config, model, mesh)
    scaler = datasets.get_data_scaler(config)
    train, test = (datasets.load_split(config, split, host_index=0, host_count=1) for split in ("train", "test"))
    x0 = scaler(jnp.asarray(test.source.read(np.arange(FLAGS.images))[0] / np.float32(255)))
    mean = scaler(jnp.asarray(train.source.read(np.arange(len(train)))[0] / np.float32(255))).mean(0)
    background = x0 <= scaler(jnp.zeros(()))  # the data's lower bound (-1 for centred data)
    continuous = config.training.continuous
    score_fn = get_score_fn(sde, model, state.ema_variables, continuous=continuous)

    @jax.jit
    def denoise(x, t):
        alpha, sigma = sde.perturbation_coeffs(t, continuous)
        return sde_lib.batch_mul(1.0 / alpha, x + sde_lib.batch_mul(sigma**2, score_fn(x, t)))

    print(f"{workdir} step {step}: {config.model.name}, prediction {config.model.prediction}, loss "
          f"{config.training.loss}, {'continuous' if continuous else 'discrete'} time; {FLAGS.images} test images")
    print(f"mean image's error: {float(jnp.mean((x0 - mean) ** 2)):.4f} (all pixels)")
    print(f"{'sigma_e':>8s} {'t':>7s} {'MSE all':>8s} {'background':>10s} {'foreground':>10s}")
    rng = jax.random.PRNGKey(config.seed)
    for level in NOISE_LEVELS:
        t = jnp.full((len(x0),), nearest_time(sde, level, continuous))
        alpha, sigma = sde.perturbation_coeffs(t, continuous)
        z = jax.random.normal(jax.random.fold_in(rng, int(1000 * level)), x0.shape)
        err = (denoise(sde_lib.batch_mul(alpha, x0) + sde_lib.batch_mul(sigma, z), t) - x0) ** 2
        print(f"{float(sigma[0] / alpha[0]):8.3f} {float(t[0]):7.4f} {float(err.mean()):8.4f} "
              f"{float(err[background].mean()):10.4f} {float(err[~background].mean()):10.4f}")


if __name__ == "__main__":
    app.run(main)
