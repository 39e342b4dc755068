"""`--mode eval`'s samples of a concat-conditioned model (config.concat.kind; modes/evaluate.py calls it): one
sample per condition of the test split, in resumable rounds, scored by FD against the train split's statistics
(modes.evaluate.quality) and by the task's own figures, each averaged over images:

    lowres      PSNR(x_hat, x) of the samples against the high-resolution truth x, and PSNR(B(A_k x), x) of the
                bicubic upsampling of its k x k area means (jax.image.resize 'cubic'), the baseline to beat
    inpaint     known_error = sum m' |x_hat - x| / (C sum m'), m' = 1 - m the known pixels (the network is not
                made to keep them), and FD of the completed images x (1 - m) + x_hat m (tasks.concat.complete)
    foreground  the fraction of pixels where the samples' foreground [gray(x_hat) > threshold] is the condition's

with PSNR_b = 10 log10(1 / mean (x_hat_b - x_b)^2) (evaluation.metrics.image_psnr), images in [0, 1]. Round r
samples the conditions of test images r B .. r B + B - 1 (wrapping around the split; B = config.eval.batch_size),
with their classes for a class-conditional model; its randomness is a function of (config.seed, k, r) alone, so
a killed eval, run again, continues at its first unfinished round (evaluation/resumable.py).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

import datasets
from data_sources import conditions
from evaluation import features as features_lib
from evaluation.metrics import image_psnr
from evaluation.resumable import run_rounds
from tasks import concat
from training import parallel
from training.files import json_digest, tree_digest


def bicubic(images: np.ndarray, factor: int) -> np.ndarray:
    """B(A_k x): the k x k area means of images in [0, 1] brought back to full size by bicubic interpolation
    (jax.image.resize 'cubic'), clipped to [0, 1]."""
    small = conditions.area_downsample(np.asarray(images, np.float32), factor)
    return np.clip(np.asarray(jax.image.resize(small, np.shape(images), "cubic")), 0.0, 1.0)


def task_figures(config, samples: np.ndarray, truth: np.ndarray, condition: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image figures (B,) of samples against the images their conditions were made from (module docstring)."""
    c = config.concat
    if c.kind == "lowres":
        return {"psnr": np.asarray(image_psnr(samples, truth)),
                "bicubic_psnr": np.asarray(image_psnr(bicubic(truth, c.factor), truth))}
    if c.kind == "inpaint":
        known = 1.0 - condition[..., -1:]
        error = np.sum(known * np.abs(samples - truth), axis=(1, 2, 3))
        return {"known_error": error / np.maximum(known.sum(axis=(1, 2, 3)) * samples.shape[-1], 1.0)}
    return {"foreground_agreement": np.mean(conditions.threshold_mask(samples, c.threshold) == condition[..., :1],
                                            axis=(1, 2, 3))}


def sample_rounds(config, net_config, sample_fn, variables, net, k: int, folder: str) -> dict[str, np.ndarray] | None:
    """The round arrays, concatenated and cut to config.eval.num_samples (on process 0; None elsewhere): uint8
    images, their features and logits, the task figures, and for inpainting the completed images' features.
    sample_fn is make_sample_fn's for the network of net_config (a latent model's: its latents' resolution)."""
    e = config.eval
    test = datasets.load_split(config, "test", host_index=0, host_count=1)
    condition_fn = concat.condition_fn(config)
    key = json_digest({"sampling": config.sampling.to_dict(), "concat": config.concat.to_dict(), "seed": config.seed,
                       "batch_size": e.batch_size, "ckpt": k, "ema": tree_digest(variables),
                       "features": net.fingerprint, "data": config.data.to_dict()})
    rngs = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), k), 0)

    def compute(r):
        indices = (r * e.batch_size + np.arange(e.batch_size)) % len(test)
        pixels, labels = test.source.read(indices)
        truth = pixels / np.float32(255)
        condition = condition_fn(truth, indices)
        x = parallel.gather(sample_fn(jax.random.fold_in(rngs, r), variables,
                                      jnp.asarray(labels) if config.model.num_classes else None,
                                      concat=concat.to_denoiser(condition, net_config)))
        if not np.all(np.isfinite(x)):
            raise FloatingPointError(f"Sampling checkpoint {k} gave non-finite values (round {r}).")
        images = datasets.to_uint8(x)
        out = {"images": images, **features_lib.compute_features(net, images, e.batch_size),
               **task_figures(config, images / np.float32(255), truth, condition)}
        if config.concat.kind == "inpaint":
            completed = features_lib.compute_features(net, datasets.to_uint8(concat.complete(condition, x)),
                                                      e.batch_size)
            out.update(completed_features=completed["features"], completed_logits=completed["logits"])
        return out

    rounds = run_rounds(folder, "concat_samples", math.ceil(e.num_samples / e.batch_size), key, compute,
                        f"ckpt {k} concat samples")
    if jax.process_index() != 0:
        return None
    return {name: np.concatenate([r[name] for r in rounds])[:e.num_samples] for name in rounds[0]}


def figures(config, samples: dict[str, np.ndarray], quality) -> dict:
    """The task figures' means over the samples, and quality(features, logits) of the completed images for
    inpainting (FD etc. against the train split)."""
    names = {"lowres": ("psnr", "bicubic_psnr"), "inpaint": ("known_error",),
             "foreground": ("foreground_agreement",)}[config.concat.kind]
    out = {"kind": config.concat.kind, **{name: float(np.mean(samples[name])) for name in names}}
    if config.concat.kind == "inpaint":
        out["completed"] = quality(samples["completed_features"], samples["completed_logits"])
    return out
