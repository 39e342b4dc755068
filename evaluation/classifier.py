"""The domain feature network: a small CNN classifier p(y | x) trained on the config's own dataset.

Where Inception weights are absent (and for 8x8 or 28x28 grey digits, where an ImageNet network means
little), sample quality is measured in this network's feature space: Fréchet distance and KID on its
penultimate layer, the class histogram of samples from its softmax, and its test accuracy to say how
far its features can be trusted.

    x in [0, 1] -> 2x - 1 -> 6 x [conv3x3 (+ Dense(temb)) -> GroupNorm -> swish], channels nf, nf, 2nf, 2nf,
    4nf, 4nf, strides 1, 1, 2, 1, 2, 1 -> flatten -> Dense(4nf) -> swish = features -> Dense(K) = logits

With time_conditional=True the same network is p(y | x_t, t) for classifier guidance: a sinusoidal
embedding of the noise conditioning c(t) enters every stage. config.classifier.noise_conditional trains it
on x_t = alpha(t) x_0 + sigma(t) z, t ~ U(eps, T), with the (alpha, sigma) and c(t) the score model sees
(config.training.sde / continuous; models.noise_conditioning), writes it to config.sampling.classifier_dir
(default workdir/noise_classifier), and `guidance_log_prob_fn` turns it into the log p_t(y | x) of
samplers.guidance.classifier_guidance.
"""
from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import traverse_util
from tqdm import tqdm

import datasets
import models
import sde_lib
from evaluation.files import atomic_savez
from models.layers import timestep_embedding
from training.validation import ConfigError

WEIGHTS_FILE = "classifier.npz"


class Classifier(nn.Module):
    """images (B, H, W, C) in [0, 1] [, t (B,)] -> {'features': (B, 4nf), 'logits': (B, num_classes)}."""

    num_classes: int
    nf: int = 16
    time_conditional: bool = False

    @nn.compact
    def __call__(self, images, t=None):
        if self.time_conditional == (t is None):
            raise ValueError("A time-conditional Classifier takes (images, t); an unconditional one only images.")
        temb = None
        if self.time_conditional:
            temb = nn.swish(nn.Dense(4 * self.nf)(timestep_embedding(t, self.nf)))
        h = 2.0 * jnp.asarray(images, jnp.float32) - 1.0
        for k, (mult, stride) in enumerate(((1, 1), (1, 1), (2, 2), (2, 1), (4, 2), (4, 1))):
            h = nn.Conv(mult * self.nf, (3, 3), strides=stride, padding="SAME", name=f"conv{k}")(h)
            if temb is not None:
                h = h + nn.Dense(mult * self.nf, name=f"temb{k}")(temb)[:, None, None, :]
            h = nn.swish(nn.GroupNorm(num_groups=min(mult * self.nf // 4, 32), name=f"norm{k}")(h))
        features = nn.swish(nn.Dense(4 * self.nf, name="features")(h.reshape(h.shape[0], -1)))
        return {"features": features, "logits": nn.Dense(self.num_classes, name="logits")(features)}


def cross_entropy(logits, labels) -> jax.Array:
    """Mean of -log softmax(logits)_y over the batch."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def make_train_step(model: Classifier, optimizer: optax.GradientTransformation, perturb=None):
    """jit(params, opt_state, rng, images, labels) -> (params, opt_state, loss): one Adam step on the
    cross-entropy. perturb(rng, images) -> (x_t, t) trains a time-conditional model on noised images."""

    @jax.jit
    def step(params, opt_state, rng, images, labels):
        def loss_fn(p):
            inputs = (images,) if perturb is None else perturb(rng, images)
            return cross_entropy(model.apply({"params": p}, *inputs)["logits"], labels)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def accuracy(predict, dataset: datasets.Dataset, batch_size: int) -> float:
    """Fraction of `dataset` whose argmax predict(images) equals the label (padding masked out)."""
    correct = total = 0.0
    for batch in dataset.ordered_batches(batch_size):
        hit = np.argmax(np.asarray(predict(batch["image"])), axis=-1) == batch["label"]
        correct += float(np.sum(hit * batch["mask"]))
        total += float(np.sum(batch["mask"]))
    return correct / total


def classifier_dir(config, workdir: str, noise_conditional: bool = False) -> str:
    """The domain classifier's folder, or with noise_conditional the guidance classifier's."""
    if noise_conditional:
        return config.sampling.classifier_dir or os.path.join(workdir, "noise_classifier")
    return config.eval.classifier_dir or os.path.join(workdir, "classifier")


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


def guidance_log_prob_fn(config, workdir: str, sde: sde_lib.SDE):
    """(log_prob_fn, K): log_prob_fn(x, t) -> log p_t(y | x) (B, K), x in the model's data space, of the
    noise-conditional classifier in classifier_dir(config, workdir, noise_conditional=True), checked to
    match config's data, SDE and time discretization."""
    folder = classifier_dir(config, workdir, noise_conditional=True)
    if not os.path.isfile(os.path.join(folder, WEIGHTS_FILE)):
        raise ConfigError(f"No noise-conditional classifier in {folder}: train one with --mode train_classifier "
                          f"--config.classifier.noise_conditional=True (same --config and --workdir), or set "
                          f"config.sampling.classifier_dir.")
    model, params, meta = load_classifier(folder)
    d, t = config.data, config.training
    expected = (d.dataset, d.image_size, d.num_channels, t.sde, t.continuous)
    found = tuple(meta.get(k) for k in ("dataset", "image_size", "num_channels", "sde", "continuous"))
    if not model.time_conditional or found != expected:
        raise ConfigError(f"The classifier in {folder} was trained for (dataset, size, channels, sde, continuous) = "
                          f"{found}, time-conditional {model.time_conditional}; classifier guidance needs a "
                          f"noise-conditional one for {expected}.")
    inverse_scaler = datasets.get_data_inverse_scaler(config)

    def log_prob_fn(x, time):
        cond = models.noise_conditioning(sde, time, t.continuous)[0]
        return jax.nn.log_softmax(model.apply({"params": params}, inverse_scaler(x), cond)["logits"])

    return log_prob_fn, model.num_classes


def save_classifier(folder: str, model: Classifier, params, **meta) -> str:
    """Write params and the architecture (plus `meta`) to folder/classifier.npz, atomically; returns the path."""
    flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}
    arch = {"num_classes": model.num_classes, "nf": model.nf, "time_conditional": model.time_conditional}
    path = os.path.join(folder, WEIGHTS_FILE)
    atomic_savez(path, __meta__=np.asarray(json.dumps({**arch, **meta})), **flat)
    return path


def load_classifier(folder: str) -> tuple[Classifier, dict, dict]:
    """(model, params, meta) saved by save_classifier in `folder`."""
    path = os.path.join(folder, WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise ConfigError(f"No domain classifier at {path}: train one with --mode train_classifier (same --config "
                          f"and --workdir), or point config.eval.classifier_dir at its folder.")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop("__meta__")))
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise ConfigError(f"{path} is not a readable classifier file ({e}); train it again with "
                          f"--mode train_classifier.") from e
    model = Classifier(num_classes=meta["num_classes"], nf=meta["nf"], time_conditional=meta["time_conditional"])
    params = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in arrays.items()})
    return model, params, meta


def train_classifier(config, workdir: str) -> str:
    """`--mode train_classifier`: fit the classifier on config.data's train split, report its test accuracy,
    and write it to config.eval.classifier_dir (default workdir/classifier); with
    config.classifier.noise_conditional, the guidance classifier p(y | x_t, t) to classifier_dir(..., True).
    Returns the weights' path.

    Every process trains the same network on the whole split (it is small); only process 0 writes.
    """
    c, d = config.classifier, config.data
    if min(c.nf, c.n_iters, c.batch_size) < 1 or c.nf % 4:
        raise ConfigError(f"config.classifier needs n_iters, batch_size >= 1 and nf a positive multiple of 4, got "
                          f"nf={c.nf}, n_iters={c.n_iters}, batch_size={c.batch_size}.")
    train_data = datasets.load_split(config, "train", host_index=0, host_count=1)
    test_data = datasets.load_split(config, "test", host_index=0, host_count=1)
    model = Classifier(num_classes=int(train_data.labels.max()) + 1, nf=c.nf, time_conditional=c.noise_conditional)
    perturb = noisy_inputs(config, sde_lib.from_config(config)) if c.noise_conditional else None
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    init_inputs = (jnp.zeros((1, d.image_size, d.image_size, d.num_channels)),) + ((jnp.zeros(1),) if perturb else ())
    params = model.init(init_rng, *init_inputs)["params"]
    optimizer = optax.adam(c.lr)
    opt_state = optimizer.init(params)
    step = make_train_step(model, optimizer, perturb)

    bar = tqdm(range(c.n_iters), desc="classifier", unit="step", disable=jax.process_index() != 0)
    for k in bar:
        batch = train_data.batch(k, c.batch_size, augment=False)
        params, opt_state, loss = step(params, opt_state, jax.random.fold_in(train_rng, k), batch["image"],
                                       batch["label"])
        if k % 100 == 0 or k == c.n_iters - 1:
            bar.set_postfix(loss=f"{float(loss):.4f}")
    bar.close()

    # a noise-conditional classifier is scored on test images noised at t ~ U(eps, T) (fixed draws)
    inputs = (lambda x: (x,)) if perturb is None else (lambda x: perturb(jax.random.PRNGKey(config.seed + 1), x))
    predict = jax.jit(lambda x: model.apply({"params": params}, *inputs(x))["logits"])
    test_accuracy = accuracy(predict, test_data, c.batch_size)
    folder = classifier_dir(config, workdir, c.noise_conditional)
    path = os.path.join(folder, WEIGHTS_FILE)
    noise = {"sde": config.training.sde, "continuous": config.training.continuous} if perturb else {}
    if jax.process_index() == 0:
        path = save_classifier(folder, model, params, dataset=d.dataset, image_size=d.image_size,
                               num_channels=d.num_channels, n_iters=c.n_iters, test_accuracy=test_accuracy, **noise)
    logging.info("%s classifier: test accuracy %.4f on %d %s images%s; written to %s.",
                 "Noise-conditional" if perturb else "Domain", test_accuracy, len(test_data), d.dataset,
                 " noised at t ~ U(eps, T)" if perturb else "", path)
    return path
