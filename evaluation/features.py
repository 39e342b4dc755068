"""Which network sample quality is measured with, and the statistics of real data under it.

`get_feature_net(config, workdir)`: the FID Inception-v3 (pool3 features, unbiased logits) when
config.eval.inception_path names the pytorch-fid weight file, else the domain classifier of
evaluation/classifier.py (penultimate features, class logits) from config.eval.classifier_dir.

Reference statistics of a split (mu, sigma, features for KID, logits, labels) are one .npz per
(dataset, image size, split, network) in config.eval.stats_dir (default workdir/eval_folder), tagged
with the network's fingerprint (a hash of its weight file): statistics made with other weights are
never used, they are computed again.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import datasets
from evaluation import classifier, fid_weights, inception, metrics
from training.files import file_digest
from training.validation import ConfigError


@dataclasses.dataclass(frozen=True)
class FeatureNet:
    """apply: jit(images float32 (B, H, W, C) in [0, 1]) -> {'features': (B, D), 'logits': (B, K)}."""

    name: str  # "inception" or "classifier"
    description: str
    fingerprint: str
    apply: Callable
    num_classes: int  # of the dataset for the classifier (class histograms); 0 for Inception's 1008 ImageNet ones
    test_accuracy: float | None = None


def _inception_net(path: str) -> FeatureNet:
    try:
        variables = fid_weights.load_fid_inception_params(path)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from e
    net = inception.FIDInceptionV3()

    @jax.jit
    def apply(images):
        rgb = jnp.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
        out = net.apply(variables, rgb)
        return {"features": out["pool3"], "logits": out["logits_unbiased"]}

    return FeatureNet("inception", f"FID Inception-v3 pool3 ({path})", file_digest(path), apply, num_classes=0)


def classifier_net(config, workdir: str) -> FeatureNet:
    """The domain classifier of classifier_dir(config, workdir), checked to be trained on config.data."""
    folder = classifier.classifier_dir(config, workdir)
    model, params, meta = classifier.load_domain_classifier(config, folder)
    apply = jax.jit(lambda images: model.apply({"params": params}, images))
    path = os.path.join(folder, classifier.WEIGHTS_FILE)
    return FeatureNet("classifier", f"domain classifier penultimate layer ({path})", file_digest(path), apply,
                      num_classes=model.num_classes, test_accuracy=meta.get("test_accuracy"))


def get_feature_net(config, workdir: str) -> FeatureNet:
    """The Inception network when config.eval.inception_path is set, else the domain classifier."""
    if config.eval.inception_path:
        return _inception_net(config.eval.inception_path)
    return classifier_net(config, workdir)


def compute_features(net: FeatureNet, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """{'features', 'logits'} of uint8 images (N, H, W, C), in batches of batch_size (the last one padded)."""
    out = {"features": [], "logits": []}
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk), axis=0)])
        result = net.apply(padded.astype(np.float32) / 255.0)
        for k in out:
            out[k].append(np.asarray(result[k])[:len(chunk)])
    return {k: np.concatenate(v) for k, v in out.items()}


def stats_path(config, workdir: str, eval_folder: str, net: FeatureNet, split: str) -> str:
    d = config.data
    folder = config.eval.stats_dir or os.path.join(workdir, eval_folder)
    return os.path.join(folder, f"stats_{d.dataset}_{d.image_size}px_{split}_{net.name}.npz")


def split_statistics(config, workdir: str, eval_folder: str, net: FeatureNet, split: str,
                     recompute: bool = False) -> dict[str, np.ndarray]:
    """{'mu', 'sigma', 'features', 'logits', 'labels'} of the whole `split` of config.data under `net`,
    read from its stats file when that was made with the same network, else computed (and, on process 0,
    written there). Every process reads the whole split."""
    path = stats_path(config, workdir, eval_folder, net, split)
    if not recompute and os.path.isfile(path):
        stats = metrics.load_reference_stats(path)
        if str(stats.get("fingerprint", net.fingerprint)) == net.fingerprint:
            return stats
        logging.warning("%s was computed with other %s weights; computing it again.", path, net.name)
    data = datasets.load_split(config, split, host_index=0, host_count=1)
    b = config.eval.batch_size
    parts, labels = [], []
    for start in range(0, len(data), b):  # streamed: a large split is never in memory whole
        images, batch_labels = data.source.read(np.arange(start, min(start + b, len(data))))
        parts.append(compute_features(net, images, b))
        labels.append(batch_labels)
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    mu, sigma = metrics.feature_statistics(out["features"])
    stats = {"mu": mu, "sigma": sigma, **out, "labels": np.concatenate(labels),
             "fingerprint": np.asarray(net.fingerprint)}
    if jax.process_index() == 0:
        metrics.save_reference_stats(path, **stats)
        logging.info("Statistics of the %d %s images of %s written to %s.", len(data), split, config.data.dataset,
                     path)
    return stats
