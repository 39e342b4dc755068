"""A score model in an autoencoder's latent space (tasks/latent.py, tasks/score.py): the export's scale gives
unit-std latents, runs against a missing / unfinished / mismatched autoencoder are refused before anything is
written, and a short latent run trains on the frozen encoder, records it and decodes its snapshot to pixels."""
import json
import os

import jax
import numpy as np
import pytest

import datasets
import models
import sde_lib
import tasks
from helpers import tiny_config as tiny_score_config
from modes.evaluate import evaluate
from samplers.likelihood import get_likelihood_fn
from tasks import latent
from test_autoencoder_task import tiny_config as tiny_autoencoder_config
from training import loop, parallel
from training.checkpoint import Checkpointer, abstract_like
from training.validation import ConfigError


@pytest.fixture(scope="module")
def autoencoder_dir(tmp_path_factory):
    """The export of a random (untrained) tiny autoencoder of the 8x8 digits: what its task's finish writes."""
    workdir = str(tmp_path_factory.mktemp("autoencoder"))
    task = tasks.get_task(tiny_autoencoder_config(), workdir)
    task.finish(task.init_state())
    return workdir


def test_the_scaled_latents_have_the_std_the_scale_promises(autoencoder_dir):
    export = latent.load_export(autoencoder_dir)
    with open(os.path.join(autoencoder_dir, latent.EXPORT_FILE)) as f:
        meta = json.load(f)
    assert meta["scale_factor"] == pytest.approx(1.0 / meta["latent_std"]) and meta["scale_examples"] == 100
    assert (meta["image_size"], meta["num_channels"], meta["step"]) == (8, 1, 0) and export.shape == (4, 4, 2)
    config = tiny_autoencoder_config()
    images = tasks.get_task(config, autoencoder_dir).train_data.source.read(np.arange(100))[0] / np.float32(255)
    z = np.asarray(export.encode(export.params, images), np.float64)
    assert z.shape == (100, 4, 4, 2) and np.std(z) == pytest.approx(1.0, rel=1e-4)
    assert export.decode(export.params, z[:2]).shape == (2, 8, 8, 1)


def _latent_config(folder, **data):
    config = tiny_score_config()
    config.latent.autoencoder_dir = str(folder)
    for name, value in data.items():
        config.data[name] = value
    return config


@pytest.mark.parametrize("case", ["missing", "unfinished", "image_size", "num_channels"])
def test_a_missing_unfinished_or_mismatched_autoencoder_is_refused_before_anything_is_written(
        case, autoencoder_dir, tmp_path):
    workdir = tmp_path / "latent"
    workdir.mkdir()
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    config, expected = {
        "missing": (_latent_config(tmp_path / "nowhere"), "does not exist"),
        "unfinished": (_latent_config(unfinished), r"has no autoencoder.json \(it has checkpoints"),
        "image_size": (_latent_config(autoencoder_dir, image_size=16), "trained on 8x8x1 images"),
        "num_channels": (_latent_config(autoencoder_dir, num_channels=3), "trained on 8x8x1 images"),
    }[case]
    with pytest.raises(ConfigError, match=expected) as error:
        tasks.get_task(config, str(workdir))
    assert "\n" not in str(error.value) and os.listdir(workdir) == []


def test_a_latent_score_model_trains_on_the_frozen_encoder_and_decodes_its_snapshot(autoencoder_dir, tmp_path):
    config = _latent_config(autoencoder_dir)
    config.training.n_iters = 4
    config.training.eval_freq = 0  # the eval step is the train step's loss: one compile fewer
    config.training.snapshot_freq_for_preemption = 4
    config.training.snapshot_sampling = True
    config.training.snapshot_num_samples = 4
    config.sampling.method, config.sampling.predictor, config.sampling.corrector = "pc", "euler_maruyama", "none"
    config.sampling.num_steps = 3
    task = tasks.get_task(config, str(tmp_path / "latent"))
    assert task.net_config.data.image_size == 4 and task.net_config.data.num_channels == 2
    state = loop.train(task)
    export = latent.load_export(autoencoder_dir)
    assert jax.tree_util.tree_leaves(state.params)[0].ndim > 0
    with Checkpointer(task.workdir) as checkpointer:
        meta = checkpointer.latest(abstract_like(task.init_state, parallel.make_mesh())).meta
    assert meta["frozen"] == {"autoencoder": export.folder, "step": 0, "digest": export.meta["digest"],
                              "scale_factor": export.scale}
    grid = np.load(os.path.join(task.workdir, "samples", "step_00000004.npz"))["image"]
    assert grid.shape == (4, 8, 8, 1)  # decoded to the autoencoder's pixels


@pytest.mark.slow
def test_eval_reports_latent_bits_per_dim_of_the_encoded_test_images(autoencoder_dir, tmp_path):
    """--mode eval on a latent model: 'latent_bpd' (never 'bpd'), the continuous density's -log2 p(z) / D_z of the
    test images' scaled latents, as the likelihood computes it on latents encoded here."""
    config = _latent_config(autoencoder_dir)
    config.training.n_iters = config.training.snapshot_freq = 1
    config.training.eval_freq = 0
    workdir = str(tmp_path / "latent")
    task = tasks.get_task(config, workdir)
    state = loop.train(task)
    e = config.eval
    e.enable_loss, e.enable_sampling, e.enable_bpd, e.bpd_dataset = False, False, True, "test"
    e.batch_size, e.hutchinson_type = 8, "gaussian"
    (result,) = evaluate(config, workdir, "eval")
    assert "bpd" not in result and result["latent_bpd"]["num_images"] == len(datasets.load_split(config, "test"))

    export = latent.load_export(autoencoder_dir)
    images = next(datasets.load_split(config, "test").ordered_batches(8))["image"]
    sde = sde_lib.from_config(config)
    fn = get_likelihood_fn(sde, hutchinson_type="gaussian", rtol=e.bpd_rtol, atol=e.bpd_atol, eps=e.bpd_eps,
                           quantized=False)
    score_fn = models.get_score_fn(sde, task.model, state.ema_variables, continuous=config.training.continuous)
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), 1), 1), 0)
    direct, _, _ = fn(rng, score_fn, export.encode(export.params, images))
    rounds = np.load(os.path.join(workdir, "eval", "ckpt_1", "latent_bpd_00000.npz"))
    np.testing.assert_allclose(rounds["latent_bpd"], np.asarray(direct), rtol=1e-4)
