"""`--mode eval` (a checkpoint -> the numbers of a paper) and `--mode fid_stats` (reference statistics).

Checkpoints are numbered as in score_sde: checkpoint k is the periodic checkpoint of step
k * config.training.snapshot_freq (workdir/checkpoints/<step>); config.eval.begin_ckpt..end_ckpt
(inclusive) are evaluated with their EMA parameters. A checkpoint that is not there is an error, raised
before anything is written (score_sde waited for it instead; run eval after training, or again).

For each checkpoint k, workdir/<eval_folder>/ receives
    ckpt_<k>.json               every figure below, with the feature network and the settings used
    ckpt_<k>_samples_stats.npz  mu, sigma, features, logits of the samples (usable as reference statistics)
    ckpt_<k>_samples.png        a grid of the first 64 samples
    ckpt_<k>/samples_<r>.npz    round r of sampling: uint8 images + features + logits
    ckpt_<k>/bpd_<r>.npz        round r of bits/dim: per-example bpd and mask (latent_bpd_<r>.npz: latent_bpd)
    ckpt_<k>/bound_bpd_<r>.npz  round r of the variational bound's bits/dim: per-example bound_bpd and mask
The rounds (config.eval.batch_size samples, or one batch of the bpd split, each) make the evaluation
resumable: a killed eval, rerun with the same command, continues at the first unfinished round, and the
result is the same as an uninterrupted run's, because round r's randomness is a function of
(config.seed, k, r) only (evaluation/resumable.py).

Figures: `eval_loss` (the DSM loss of the EMA parameters on the full batches of the test split, as
score_sde); `samples` (FD, KID +- its standard error, IS, and with the domain classifier the class
histogram, against the train split's statistics); `real_test` (the same for the held-out test split
against the train split: the noise floor a perfect model would reach with that many images, and the
classifier's test accuracy); `bpd` (bits/dim over config.eval.bpd_dataset with the probability-flow
likelihood, mean and standard error over images; for a latent model `latent_bpd` instead, -log2 p(z) / D_z of
the images' scaled latents, a continuous density's bits/dim, not comparable with pixels'); `bound_bpd`
(config.eval.enable_bound: the variational bound's bits/dim of the 8-bit test images, an upper bound on their
discrete NLL under the model's reverse chain: for a discrete-time VP model the exact sum over t of
losses.vlb.bound_bpd (N network calls an image, its learned variance if it has one, else beta_t), for a
continuous-time VP model the one-sample estimate of losses.vdm.bound_bpd; mean and standard error over images,
as `bpd`).

A concat-conditioned model (config.concat.kind) is evaluated on its test conditions: `eval_loss` with each test
image's condition, `samples` one sample per test condition (FD etc. against the train split), and `concat` the
task's figures (modes/concat_eval.py: PSNR against the truth and of bicubic upsampling for 'lowres'; the known
pixels' error and the completed images' FD for 'inpaint'); its rounds are ckpt_<k>/concat_samples_<r>.npz.
"""
from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from absl import logging

import datasets
import models
import sde_lib
from losses import chain, vdm, vlb
from evaluation import features as features_lib
from evaluation import metrics
from evaluation.resumable import run_rounds
from samplers import guidance as guidance_lib
from samplers.likelihood import get_likelihood_fn
from modes import concat_eval, concat_sample
from modes import sample as plain
from tasks import concat, latent
from tasks.score import make_sample_fn, restore_train_state, step_fn_from_config
from training import parallel
from training.checkpoint import Checkpointer, periodic_steps
from training.files import atomic_write_json, json_digest, tree_digest
from training.validation import ConfigError
from training.writers import save_image_grid


def checkpoint_steps(config, workdir: str) -> list[tuple[int, int]]:
    """[(k, step)] for k = begin_ckpt..end_ckpt, step = k * snapshot_freq; every one must exist."""
    e, freq = config.eval, config.training.snapshot_freq
    if not 1 <= e.begin_ckpt <= e.end_ckpt:
        raise ConfigError(f"config.eval.begin_ckpt={e.begin_ckpt} and end_ckpt={e.end_ckpt} must satisfy "
                          f"1 <= begin_ckpt <= end_ckpt.")
    folder, available = periodic_steps(workdir)
    wanted = [(k, k * freq) for k in range(e.begin_ckpt, e.end_ckpt + 1)]
    missing = [f"{k} (step {step})" for k, step in wanted if step not in available]
    if missing:
        raise ConfigError(f"Checkpoint {', '.join(missing)} not found in {folder}, which holds the steps "
                          f"{available or 'none'}; checkpoint k is step k * config.training.snapshot_freq "
                          f"(= {freq}), so set config.eval.begin_ckpt/end_ckpt (or snapshot_freq) to match.")
    return wanted


def _validate(config, num_devices: int) -> None:
    e = config.eval
    if config.concat.kind and (e.enable_bpd or e.enable_bound or config.text.conditional):
        raise ConfigError(f"config.concat.kind={config.concat.kind!r}: --mode eval of a concat-conditioned model "
                          f"gives its test loss and samples; bits/dim (eval.enable_bpd / enable_bound) and a text "
                          f"model's samples are not wired for it.")
    if config.concat.kind:
        concat.validate(config)
    parallel.check_divisible("eval.batch_size", e.batch_size, num_devices)
    if e.enable_sampling and e.num_samples < 2:
        raise ConfigError(f"config.eval.num_samples={e.num_samples} must be at least 2 for feature statistics.")
    if e.enable_bpd and e.bpd_dataset not in ("train", "test"):
        raise ConfigError(f"config.eval.bpd_dataset={e.bpd_dataset!r} must be 'train' or 'test'.")
    if e.bpd_num_examples < 0:
        raise ConfigError(f"config.eval.bpd_num_examples={e.bpd_num_examples} must be >= 0 (0 = every image).")
    if not (e.enable_loss or e.enable_sampling or e.enable_bpd or e.enable_bound):
        raise ConfigError("Nothing to evaluate: set config.eval.enable_loss, enable_sampling, enable_bpd or "
                          "enable_bound.")


def make_eval_guide(config):
    """make_sample_fn's guide for config.sampling.guidance in --mode eval (None for 'none'): 'cfg' towards each
    sample's class (a class-conditional model's samples cycle through the classes) and, for a concat model, its
    condition image; ConfigError in one line, before anything is written, for any other guidance ('classifier'
    runs in --mode sample) or a model without classes or condition for cfg to guide towards."""
    s, num_classes = config.sampling, config.model.num_classes
    if s.guidance == "none":
        return None
    if s.guidance != "cfg":
        raise ConfigError(f"config.sampling.guidance={s.guidance!r}: --mode eval applies 'cfg' or 'none'; classifier "
                          f"guidance runs in --mode sample (config.sampling.classifier_dir).")
    if concat.enabled(config):
        return concat_sample.make_guide(config, num_classes or None)
    guidance_lib.check_guidance(s.guidance, num_classes)  # cfg needs a class-conditional model
    return plain.make_guide(config, list(range(num_classes)), num_classes)


def check_bound(config, sde) -> None:
    """ConfigError unless the variational bound is defined: a VP SDE and 8-bit data in [-1, 1]."""
    if not isinstance(sde, sde_lib.VPSDE):
        raise ConfigError(f"config.eval.enable_bound: the variational bound is defined here for the VP SDE, not "
                          f"{type(sde).__name__} (config.training.sde={config.training.sde!r}); use enable_bpd.")
    d = config.data
    if d.uniform_dequantization or not d.centered:
        raise ConfigError(f"config.eval.enable_bound: the bound is of 8-bit data in [-1, 1], not the continuous or "
                          f"[0, 1] data this model sees (data.uniform_dequantization={d.uniform_dequantization}, "
                          f"data.centered={d.centered}; it needs False and True); use enable_bpd.")


def quality(feats, logits, ref, config, num_classes: int) -> dict:
    """FD, KID (mean, standard error), IS and, with the domain classifier, the class histogram and `confident`:
    the share of images whose top class has softmax probability above 0.9."""
    e = config.eval
    mu, sigma = metrics.feature_statistics(feats)
    out = {"num_images": len(feats), "fd": metrics.frechet_distance(mu, sigma, ref["mu"], ref["sigma"])}
    if "features" in ref:
        out["kid"], out["kid_std"] = metrics.kernel_inception_distance(feats, ref["features"], e.kid_subsets,
                                                                      e.kid_subset_size, rng=0)
    # IS is averaged over splits, so they must not follow the data's order (a split of one class scores 1).
    shuffled = np.asarray(logits)[np.random.default_rng(0).permutation(len(logits))]
    out["is"], out["is_std"] = metrics.inception_score(shuffled, num_splits=min(10, len(logits)))
    if num_classes:
        out["class_histogram"] = np.bincount(np.argmax(logits, axis=-1), minlength=num_classes).tolist()
        out["confident"] = float(np.mean(np.max(scipy.special.softmax(np.asarray(logits, np.float64), -1), -1) > 0.9))
    return out


def _real_test(config, net, train_stats, test_stats) -> dict:
    out = quality(test_stats["features"], test_stats["logits"], train_stats, config, net.num_classes)
    if net.num_classes:
        out["classifier_accuracy"] = float(np.mean(np.argmax(test_stats["logits"], -1) == test_stats["labels"]))
    return out


def _eval_loss(config, sde, model, state, mesh, space: latent.ScoreSpace) -> float:
    """Mean DSM loss of the EMA parameters over the full batches of the test split (score_sde's eval loss); of
    the encoded test images for a latent model."""
    b = config.eval.batch_size
    test_data = datasets.load_split(config, "test")
    num_batches = len(test_data) // b
    if not num_batches:
        raise ConfigError(f"config.eval.batch_size={b} exceeds the {len(test_data)} test images; lower it.")
    given = None
    if concat.enabled(config):  # the test images' conditions, as in training
        test_data, given = (datasets.ConditionedData(test_data, concat.condition_fn(config)),
                            concat.network_inputs(space.net_config))
    loss_fn = jax.jit(step_fn_from_config(config, sde, model, train=False, scaler=datasets.get_data_scaler(config),
                                          encode=space.encode, conditions=given))
    frozen = None if space.frozen is None else parallel.replicate(space.frozen, mesh)
    batch_losses = []
    for batch, _ in zip(test_data.ordered_batches(b), range(num_batches)):
        keys = ("image", "label") + (("condition",) if given else ())
        batch_losses.append(float(loss_fn(state, parallel.shard_batch({name: batch[name] for name in keys}, mesh),
                                          frozen)))
        state = state.replace(rng=jax.random.split(state.rng, 3)[0])  # as the train loop's eval step advances it
    return float(np.mean(batch_losses))


def _sample_rounds(config, model, sample_fn, state, net, k: int, folder: str) -> dict[str, np.ndarray]:
    e = config.eval
    key = json_digest({"sampling": config.sampling.to_dict(), "batch_size": e.batch_size, "seed": config.seed,
                       "ckpt": k, "ema": tree_digest(state.ema_variables), "features": net.fingerprint})
    rngs = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), k), 0)

    def compute(r):
        x = parallel.gather(sample_fn(jax.random.fold_in(rngs, r), state.ema_variables))
        if not np.all(np.isfinite(x)):
            raise FloatingPointError(f"Sampling checkpoint {k} gave non-finite values (round {r}); check "
                                     f"config.sampling (e.g. num_steps) and the checkpoint's training loss.")
        images = np.round(x * 255.0).astype(np.uint8)
        return {"images": images, **features_lib.compute_features(net, images, e.batch_size)}

    rounds = run_rounds(folder, "samples", math.ceil(e.num_samples / e.batch_size), key, compute, f"ckpt {k} samples")
    if jax.process_index() != 0:
        return None
    return {name: np.concatenate([r[name] for r in rounds])[:e.num_samples] for name in rounds[0]}


def make_bpd_fn(config, sde, model, space: latent.ScoreSpace | None = None, frozen=None):
    """fn(rng, variables, images in [0, 1]) -> (bits/dim (B,), nfe) with the likelihood options of config.eval;
    for a latent model (space.latents, its frozen autoencoder `frozen`) the latent bits/dim -log2 p(z) / D_z of the
    images' scaled latents z = s E(2x - 1), a continuous density's (samplers/likelihood.py), named so."""
    e = config.eval
    in_latents = space is not None and space.latents is not None
    likelihood_fn = get_likelihood_fn(sde, hutchinson_type=e.hutchinson_type, rtol=e.bpd_rtol, atol=e.bpd_atol,
                                      eps=e.bpd_eps, inverse_scaler=datasets.get_data_inverse_scaler(config),
                                      quantized=not in_latents)
    scaler = datasets.get_data_scaler(config)

    @jax.jit
    def bpd_fn(rng, variables, images, frozen):
        score_fn = models.get_score_fn(sde, model, variables, train=False, continuous=config.training.continuous)
        bpd, _, nfe = likelihood_fn(rng, score_fn, space.encode(images, frozen) if in_latents else scaler(images))
        return bpd, nfe

    return lambda rng, variables, images: bpd_fn(rng, variables, images, frozen)


def make_bound_fn(config, sde, model):
    """jit(rng, variables, images in [0, 1] on the 8-bit grid) -> (bound bits/dim (B,), network calls an image):
    vlb.bound_bpd with the learned variance or beta_t (training.continuous=False), else vdm.bound_bpd."""
    learned, continuous = models.has_learned_variance(config), config.training.continuous
    eps = config.eval.bpd_eps

    @jax.jit
    def bound_fn(rng, variables, images):
        x = jnp.round(images * 255.0)
        fn = models.get_score_fn(sde, model, variables, continuous=continuous, with_variance=learned)
        if continuous:
            return vdm.bound_bpd(vdm.vp_sde_eps_fn(sde, fn, eps), x, vdm.vp_sde_gamma(sde, eps), rng), 1
        return vlb.bound_bpd(chain.chain_eps_fn(sde, fn, learned), x, sde.discrete_betas, rng,
                             chain.variance_of(learned)), sde.N

    return bound_fn


def _image_rounds(config, fn, state, mesh, k: int, folder: str, name: str, dataset: str, settings: dict,
                  stream: int) -> dict:
    """The per-image figure `name` of fn(rng, variables, images) -> (values (B,), nfe) over every image of the split
    `dataset`, or its first config.eval.bpd_num_examples (one round per batch, rng stream `stream`), mean and
    standard error."""
    e = config.eval
    batches = list(datasets.load_split(config, dataset).ordered_batches(e.batch_size, e.bpd_num_examples))
    key = json_digest({name: {**settings, "batch_size": e.batch_size, "num_examples": e.bpd_num_examples},
                       "data": config.data.to_dict(),
                       "seed": config.seed, "ckpt": k, "ema": tree_digest(state.ema_variables)})
    rngs = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), k), stream)

    def compute(r):
        batch = parallel.shard_batch({"image": batches[r]["image"], "mask": batches[r]["mask"]}, mesh)
        values, nfe = fn(jax.random.fold_in(rngs, r), state.ema_variables, batch["image"])
        return {name: parallel.gather(values), "mask": parallel.gather(batch["mask"]), "nfe": np.asarray(nfe)}

    rounds = run_rounds(folder, name, len(batches), key, compute, f"ckpt {k} {name}")
    if jax.process_index() != 0:
        return None
    values = np.concatenate([r[name] for r in rounds])[np.concatenate([r["mask"] for r in rounds]) > 0]
    std_err = float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return {"dataset": dataset, "num_images": len(values), name: float(np.mean(values)), f"{name}_std_err": std_err,
            "mean_nfe": float(np.mean([r["nfe"] for r in rounds]))}


def _bpd(config, bpd_fn, state, mesh, k: int, folder: str, name: str) -> dict:
    """Bits/dim (`name`: 'bpd', or a latent model's 'latent_bpd') of every image of config.eval.bpd_dataset (one
    round per batch), mean and standard error."""
    e = config.eval
    settings = {f: e[f] for f in ("bpd_dataset", "hutchinson_type", "bpd_rtol", "bpd_atol", "bpd_eps")}
    return _image_rounds(config, bpd_fn, state, mesh, k, folder, name, e.bpd_dataset, settings, 1)


def _bound(config, bound_fn, state, mesh, k: int, folder: str) -> dict:
    """The variational bound's bits/dim of every test image (one round per batch), mean and standard error."""
    settings = {"continuous": config.training.continuous, "bpd_eps": config.eval.bpd_eps,
                "learned_variance": models.has_learned_variance(config)}
    return _image_rounds(config, bound_fn, state, mesh, k, folder, "bound_bpd", "test", settings, 2)


def evaluate(config, workdir: str, eval_folder: str) -> list[dict]:
    """`--mode eval`: the figures of config.eval for each chosen checkpoint; returns their dicts.

    Every process takes part in the sampling and likelihood computations; process 0 alone reads the finished
    rounds back, computes the figures from them and writes files (other processes return only eval_loss).
    """
    e = config.eval
    mesh = parallel.make_mesh()
    _validate(config, mesh.size)
    guide = make_eval_guide(config) if e.enable_sampling else None
    # Everything that can reject the config, the checkpoints or the weight files runs before anything is written.
    ckpts = checkpoint_steps(config, workdir)
    space = latent.score_space(config)
    if space.latents is not None and e.enable_bound:
        raise ConfigError("config.eval.enable_bound: the variational bound is of 8-bit pixels, and a latent model "
                          "(config.latent.autoencoder_dir) has none; use enable_bpd (latent bits/dim).")
    sde = sde_lib.from_config(config)
    if e.enable_bound:
        check_bound(config, sde)
    model = models.get_model(space.net_config)
    models.check_learned_variance(space.net_config, model)
    net = features_lib.get_feature_net(config, workdir) if e.enable_sampling else None
    sample_fn = make_sample_fn(space.net_config, sde, model, e.batch_size, mesh, guide=guide,
                               decode=space.decode) if e.enable_sampling else None
    frozen = None if space.frozen is None else parallel.replicate(space.frozen, mesh)
    bpd_fn = make_bpd_fn(config, sde, model, space, frozen) if e.enable_bpd else None
    bpd_name = "bpd" if space.latents is None else "latent_bpd"
    bound_fn = make_bound_fn(config, sde, model) if e.enable_bound else None

    out_dir = os.path.join(workdir, eval_folder)
    is_chief = jax.process_index() == 0
    real = None
    if e.enable_sampling:
        train_stats = features_lib.split_statistics(config, workdir, eval_folder, net, "train")
        test_stats = features_lib.split_statistics(config, workdir, eval_folder, net, "test")
        real = _real_test(config, net, train_stats, test_stats)
    all_results = []
    with Checkpointer(workdir) as checkpointer:
        for k, step in ckpts:
            parallel.barrier("eval_checkpoint")  # hosts meet before the collectives of the restore and sampling
            state = restore_train_state(checkpointer, step, space.net_config, model, mesh)
            results = {"checkpoint": k, "step": step, "config": {"sampling": config.sampling.to_dict(),
                                                                 "eval": config.eval.to_dict()}}
            if e.enable_loss:
                results["eval_loss"] = _eval_loss(config, sde, model, state, mesh, space)
            if e.enable_sampling:
                rounds = os.path.join(out_dir, f"ckpt_{k}")
                samples = (concat_eval.sample_rounds(config, space.net_config, sample_fn, state.ema_variables, net, k,
                                                     rounds) if concat.enabled(config) else
                           _sample_rounds(config, model, sample_fn, state, net, k, rounds))
                if is_chief:
                    results["features"] = net.description
                    results["samples"] = quality(samples["features"], samples["logits"], train_stats, config,
                                                 net.num_classes)
                    if concat.enabled(config):
                        results["concat"] = concat_eval.figures(config, samples, lambda f, lg: quality(
                            f, lg, train_stats, config, net.num_classes))
                    results["real_test"] = real
                    mu, sigma = metrics.feature_statistics(samples["features"])
                    metrics.save_reference_stats(os.path.join(out_dir, f"ckpt_{k}_samples_stats.npz"), mu, sigma,
                                                 samples["features"], logits=samples["logits"],
                                                 fingerprint=np.asarray(net.fingerprint))
                    save_image_grid(samples["images"][:64] / 255.0, os.path.join(out_dir, f"ckpt_{k}_samples.png"))
            if e.enable_bpd:
                bpd = _bpd(config, bpd_fn, state, mesh, k, os.path.join(out_dir, f"ckpt_{k}"), bpd_name)
                if is_chief:
                    results[bpd_name] = bpd
            if e.enable_bound:
                bound = _bound(config, bound_fn, state, mesh, k, os.path.join(out_dir, f"ckpt_{k}"))
                if is_chief:
                    results["bound_bpd"] = bound
            if is_chief:
                atomic_write_json(os.path.join(out_dir, f"ckpt_{k}.json"), results)
                logging.info("Checkpoint %d (step %d): %s", k, step, _summary(results))
            all_results.append(results)
    return all_results


def _summary(results: dict) -> str:
    parts = []
    if "eval_loss" in results:
        parts.append(f"eval loss {results['eval_loss']:.5g}")
    for name in ("samples", "real_test"):
        if name in results:
            r = results[name]
            kid = f", KID {r['kid']:.5g} +- {r['kid_std']:.2g}" if "kid" in r else ""
            confident = f", {r['confident']:.1%} confident" if "confident" in r else ""
            parts.append(f"{name}: FD {r['fd']:.5g}{kid}, IS {r['is']:.4g}{confident} ({r['num_images']} images)")
    for name, what in (("bpd", "bits/dim"), ("latent_bpd", "latent bits/dim")):
        if name in results:
            parts.append(f"{what} {results[name][name]:.4f} +- {results[name][f'{name}_std_err']:.2g}")
    if "bound_bpd" in results:
        b = results["bound_bpd"]
        parts.append(f"bound bits/dim {b['bound_bpd']:.4f} +- {b['bound_bpd_std_err']:.2g}")
    if "concat" in results:
        c = results["concat"]
        parts.append(f"{c['kind']}: " + ", ".join(f"{name} {value:.4g}" if name != "completed" else
                                                  f"completed FD {value['fd']:.5g}" for name, value in c.items()
                                                  if name != "kind"))
    return "; ".join(parts)


def fid_stats(config, workdir: str, eval_folder: str) -> dict:
    """`--mode fid_stats`: (re)compute the train and test statistics under the chosen feature network and
    report the noise floor (test against train)."""
    net = features_lib.get_feature_net(config, workdir)
    train_stats = features_lib.split_statistics(config, workdir, eval_folder, net, "train", recompute=True)
    test_stats = features_lib.split_statistics(config, workdir, eval_folder, net, "test", recompute=True)
    real = _real_test(config, net, train_stats, test_stats)
    logging.info("%s; %s", net.description, _summary({"real_test": real}))
    return real
