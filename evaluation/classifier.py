"""The domain classifier's files and uses: where it lives, saving and loading it, its accuracy, and the
noise-conditional one as log p_t(y | x) for classifier guidance.

Where Inception weights are absent (and for 8x8 or 28x28 grey digits, where an ImageNet network means
little), sample quality is measured in the feature space of a classifier trained on the config's own data
(models/classifier.py; --mode train_classifier, tasks/classifier.py): Fréchet distance and KID on its
penultimate layer, the class histogram of samples from its softmax, and its test accuracy to say how far
its features can be trusted. The noise-conditional variant p(y | x_t, t) (config.classifier.noise_conditional)
lives in config.sampling.classifier_dir (default workdir/noise_classifier); `guidance_log_prob_fn` turns it
into the log p_t(y | x) of samplers.guidance.classifier_guidance.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
from flax import traverse_util

import datasets
import models
import sde_lib
from models.classifier import Classifier
from training.files import atomic_savez
from training.validation import ConfigError

WEIGHTS_FILE = "classifier.npz"


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


def load_domain_classifier(config, folder: str) -> tuple[Classifier, dict, dict]:
    """load_classifier(folder), refused in one line unless it was trained on config.data."""
    model, params, meta = load_classifier(folder)
    d = config.data
    trained_on = (meta.get("dataset"), meta.get("image_size"), meta.get("num_channels"))
    if trained_on != (d.dataset, d.image_size, d.num_channels):
        raise ConfigError(f"The domain classifier in {folder} was trained on {trained_on}, not on config.data's "
                          f"{(d.dataset, d.image_size, d.num_channels)}; train one with --mode train_classifier.")
    return model, params, meta
