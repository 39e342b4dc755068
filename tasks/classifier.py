"""The domain classifier p(y | x), or the noise-conditional p(y | x_t, t), as a task of the training loop.

Train step: one Adam step (lr config.classifier.lr, no EMA) on the cross-entropy -mean log softmax(f(x))_y.
With config.classifier.noise_conditional the inputs are x_t = alpha(t) x_0 + sigma(t) z, t ~ U(eps, T), with
the (alpha, sigma) and noise conditioning c(t) the score model sees (config.training.sde / continuous), so
the classifier guides that model. After the last step the test accuracy is measured (a noise-conditional
classifier on test images noised with fixed draws) and the weights are exported to
<folder>/classifier.npz, which evaluation/classifier.py loads; checkpoints, metrics and exact resume are
the loop's, under the same folder (config.eval.classifier_dir, default workdir/classifier; for the
noise-conditional one config.sampling.classifier_dir, default workdir/noise_classifier).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import optax
from absl import logging

import datasets
import models
import sde_lib
from evaluation.classifier import WEIGHTS_FILE, accuracy, classifier_dir, save_classifier
from models.classifier import Classifier
from training.loop import Schedule
from training.state import TrainState, apply_gradients, create_train_state
from training.validation import ConfigError


def cross_entropy(logits, labels) -> jax.Array:
    """Mean of -log softmax(logits)_y over the batch."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def noisy_inputs(config, sde: sde_lib.SDE):
    """perturb(rng, images in [0, 1]) -> (x_t mapped back by the data inverse scaler, c(t)): t ~ U(eps, T),
    x_t = alpha x_0 + sigma z with x_0 in the model's data space; eps = sde.sampling_eps, as the samplers use."""
    scaler, inverse_scaler = datasets.get_data_scaler(config), datasets.get_data_inverse_scaler(config)
    continuous = config.training.continuous

    def perturb(rng, images):
        rng_t, rng_z = jax.random.split(rng)
        t = jax.random.uniform(rng_t, (images.shape[0],), minval=sde.sampling_eps, maxval=sde.T)
        alpha, sigma = sde.perturbation_coeffs(t, continuous)
        x0 = scaler(jnp.asarray(images, jnp.float32))
        xt = sde_lib.batch_mul(alpha, x0) + sde_lib.batch_mul(sigma, jax.random.normal(rng_z, x0.shape))
        return inverse_scaler(xt), models.noise_conditioning(sde, t, continuous)[0]

    return perturb


class ClassifierTask:
    """config.classifier's classifier on config.data (see the module docstring)."""

    frozen, frozen_record, augment, eval_data = None, {}, False, None

    def __init__(self, config, workdir: str):
        c, d = config.classifier, config.data
        if min(c.nf, c.n_iters, c.batch_size) < 1 or c.nf % 4:
            raise ConfigError(f"config.classifier needs n_iters, batch_size >= 1 and nf a positive multiple of 4, "
                              f"got nf={c.nf}, n_iters={c.n_iters}, batch_size={c.batch_size}.")
        self.config = config
        self.workdir = classifier_dir(config, workdir, c.noise_conditional)
        self.schedule = Schedule(batch_size=c.batch_size, n_iters=c.n_iters, log_freq=c.log_freq,
                                 snapshot_freq=c.n_iters, snapshot_freq_for_preemption=c.snapshot_freq_for_preemption,
                                 config_group="classifier")
        self.train_data = datasets.load_split(config, "train")
        self.test_data = datasets.load_split(config, "test", host_index=0, host_count=1)  # every process scores all
        self.model = Classifier(num_classes=int(self.train_data.labels.max()) + 1, nf=c.nf,
                                time_conditional=c.noise_conditional)
        self.perturb = noisy_inputs(config, sde_lib.from_config(config)) if c.noise_conditional else None
        self.optimizer = optax.adam(c.lr)
        self.learning_rate = lambda step: c.lr
        self._shape = (1, d.image_size, d.image_size, d.num_channels)

    def _inputs(self, rng, images):
        return (images,) if self.perturb is None else self.perturb(rng, images)

    def init_state(self) -> TrainState:
        init_rng, state_rng = jax.random.split(jax.random.PRNGKey(self.config.seed))
        inputs = (jnp.zeros(self._shape),) + ((jnp.zeros(1),) if self.perturb else ())
        return create_train_state(state_rng, self.model.init(init_rng, *inputs), self.optimizer, ema=False)

    def train_step(self, state: TrainState, batch, frozen=None):
        rng, step_rng = jax.random.split(state.rng)

        def loss_fn(params):
            logits = self.model.apply({"params": params}, *self._inputs(step_rng, batch["image"]))["logits"]
            return cross_entropy(logits, batch["label"])

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return apply_gradients(state, loss, grads, self.optimizer, rng)

    def snapshot(self, state: TrainState, step: int) -> None:
        """Nothing to draw: the test accuracy is measured once training ends."""

    def finish(self, state: TrainState) -> str:
        """Measure the test accuracy and write the weights to <folder>/classifier.npz (process 0); the path."""
        params, d, c = jax.device_get(state.params), self.config.data, self.config.classifier
        # a noise-conditional classifier is scored on test images noised at t ~ U(eps, T) (fixed draws)
        noise_rng = jax.random.PRNGKey(self.config.seed + 1)
        predict = jax.jit(lambda x: self.model.apply({"params": params}, *self._inputs(noise_rng, x))["logits"])
        test_accuracy = accuracy(predict, self.test_data, c.batch_size)
        noise = {"sde": self.config.training.sde, "continuous": self.config.training.continuous} if self.perturb \
            else {}
        path = os.path.join(self.workdir, WEIGHTS_FILE)
        if jax.process_index() == 0:
            save_classifier(self.workdir, self.model, params, dataset=d.dataset, image_size=d.image_size,
                            num_channels=d.num_channels, n_iters=c.n_iters, test_accuracy=test_accuracy, **noise)
        logging.info("%s classifier: test accuracy %.4f on %d %s images%s; written to %s.",
                     "Noise-conditional" if self.perturb else "Domain", test_accuracy, len(self.test_data),
                     d.dataset, " noised at t ~ U(eps, T)" if self.perturb else "", path)
        return path
