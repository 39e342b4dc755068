"""tasks/autoencoder.py on a tiny autoencoder of the 8x8 digits: the GAN terms by their closed forms before and
after disc_start, exact resume after SIGKILL, the latent scale export, and LPIPS files refused up front."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tasks
from configs.vp import ddpm_digits
from losses import autoencoder as L
from tasks import latent
from test_preemption import launch, logged_step, metrics, metrics_inode, signal_when
from test_training import leaves_equal
from training import parallel
from training.checkpoint import Checkpointer, abstract_like
from training.validation import ConfigError

#: 8x8 digits -> 4x4x2 latents, a one-layer PatchGAN (8 -> 4 -> 3 -> 2x2 logits), the GAN terms from step 6.
TINY = {
    "training.task": "autoencoder", "training.batch_size": 16, "training.n_iters": 12, "training.log_freq": 2,
    "training.eval_freq": 12, "training.snapshot_freq": 12, "training.snapshot_freq_for_preemption": 2,
    "training.snapshot_num_samples": 8, "training.keep_checkpoints": 1, "eval.batch_size": 16,
    "autoencoder.block_out_channels": (8, 8), "autoencoder.norm_num_groups": 4, "autoencoder.latent_channels": 2,
    "autoencoder.mid_block_attention": False, "autoencoder.disc_ndf": 8, "autoencoder.disc_layers": 1,
    "autoencoder.disc_start": 6, "autoencoder.lr": 1e-3, "autoencoder.scale_examples": 100,
}


def tiny_config(**overrides):
    config = ddpm_digits.get_config()
    for path, value in {**TINY, **overrides}.items():
        group, name = path.split(".")
        config[group][name] = value
    return config


def test_gan_terms_are_zero_before_disc_start_and_their_closed_form_after(tmp_path):
    task = tasks.get_task(tiny_config(), str(tmp_path))
    state = task.init_state()
    x = 2.0 * jnp.asarray(task.train_data.batch(0, 16)["image"]) - 1.0
    rng = jax.random.PRNGKey(3)
    params = state.params
    disc = lambda v: task.logits(params["discriminator"], v)  # noqa: E731
    for step in (5, 6):
        total, p = task.losses(params, x, rng, jnp.asarray(step), None)
        x_hat, kl = task.forward(params["autoencoder"], x, rng)
        rec = jnp.sum(jnp.abs(x - x_hat)) / 16  # perceptual 'none'
        np.testing.assert_allclose([p["rec"], p["reg"]], [rec, kl], rtol=1e-5)
        if step < 6:  # before disc_start: L_AE = L_rec + kl_weight KL exactly, L_D = 0
            assert float(p["factor"]) == 0.0 and float(p["disc"]) == 0.0
            assert float(total) == float(p["rec"] + 1e-6 * p["reg"])
            continue
        gen = -jnp.mean(disc(x_hat))
        hinge = 0.5 * (jnp.mean(jax.nn.relu(1 - disc(x))) + jnp.mean(jax.nn.relu(1 + disc(x_hat))))
        grads = [L.grad_wrt_leaf(lambda a, f=f: f(task.forward(a, x, rng)[0]), params["autoencoder"])
                 for f in (lambda xh: jnp.sum(jnp.abs(x - xh)) / 16, lambda xh: -jnp.mean(disc(xh)))]
        weight = 0.5 * np.linalg.norm(grads[0]) / (np.linalg.norm(grads[1]) + 1e-4)
        np.testing.assert_allclose([p["gen"], p["weight"], p["disc"]], [gen, weight, hinge], rtol=1e-4)
        np.testing.assert_allclose(total, rec + 1e-6 * kl + weight * gen, rtol=1e-5)
        assert float(p["disc"]) > 0 and abs(float(weight * gen)) > 0

    # through the train step: the discriminator does not move before disc_start (zero gradient, zero Adam
    # update) and does from then on; the autoencoder moves throughout
    batch = {k: jnp.asarray(v) for k, v in task.train_data.batch(0, 16).items()}
    step = jax.jit(task.train_step)
    before = step(state.replace(step=jnp.asarray(5)), batch, None)[0]
    after = step(state.replace(step=jnp.asarray(6)), batch, None)[0]
    assert leaves_equal(before.params["discriminator"], params["discriminator"])
    assert not leaves_equal(after.params["discriminator"], params["discriminator"])
    assert not leaves_equal(before.params["autoencoder"], params["autoencoder"])


def _final(workdir, task):
    with Checkpointer(str(workdir)) as checkpointer:
        return checkpointer.latest(abstract_like(task.init_state, parallel.make_mesh()))


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_autoencoder_and_its_latent_scale(tmp_path):
    """Killed once mid-run (the GAN terms start at step 6, so both players' Adam states matter), the rerun ends
    with the uninterrupted run's state bit for bit and the same export; the scaled latents have unit std."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    args = dict(overrides=TINY, config_file="configs/vp/ddpm_digits.py")
    assert launch(straight, tmp_path / "straight.log", **args).wait(timeout=600) == 0, \
        (tmp_path / "straight.log").read_text()
    proc = launch(killed, tmp_path / "run0.log", **args)
    inode = metrics_inode(str(killed))
    assert signal_when(proc, lambda: metrics_inode(str(killed)) != inode and logged_step(str(killed)) >= 8), \
        (tmp_path / "run0.log").read_text()
    assert launch(killed, tmp_path / "run1.log", **args).wait(timeout=600) == 0, (tmp_path / "run1.log").read_text()
    assert "Resumed from" in (tmp_path / "run1.log").read_text()

    task = tasks.get_task(tiny_config(), str(straight))
    ours, theirs = _final(killed, task), _final(straight, task)
    assert ours.step == theirs.step == 12
    assert leaves_equal(ours.state, theirs.state)  # both players, Adam's moments, step and rng
    assert [(m["step"], m.get("loss")) for m in metrics(str(killed))] == \
        [(m["step"], m.get("loss")) for m in metrics(str(straight))]
    assert os.path.isfile(straight / "samples" / "step_00000012.png")

    a, b = latent.load_export(str(killed)), latent.load_export(str(straight))
    assert leaves_equal(a.params, b.params) and a.meta["scale_factor"] == b.meta["scale_factor"]
    assert a.meta["step"] == 12 and a.meta["image_size"] == 8 and a.shape == (4, 4, 2)
    # the promise of the scale: z = s E(2x - 1) has unit std over the images it was measured on
    images = task.train_data.source.read(np.arange(len(task.train_data)))[0][:100] / np.float32(255)
    z = np.asarray(a.encode(a.params, images), np.float64)
    assert a.meta["scale_examples"] == 100 and np.std(z) == pytest.approx(1.0, rel=1e-4)


def test_missing_or_mismatched_lpips_files_are_refused_before_anything_is_written(tmp_path):
    from test_lpips import _tiny_files

    workdir = tmp_path / "run"
    workdir.mkdir()
    vgg, heads = _tiny_files(tmp_path)  # a two-conv trunk: not VGG16's
    missing = str(tmp_path / "absent_vgg16.pth")
    for files, named in (((missing, heads), missing), ((vgg, heads), vgg)):
        config = tiny_config(**{"autoencoder.perceptual": "lpips", "autoencoder.lpips_vgg_path": files[0],
                                "autoencoder.lpips_heads_path": files[1]})
        with pytest.raises(ConfigError) as error:
            tasks.get_task(config, str(workdir))
        assert named in str(error.value) and "\n" not in str(error.value)
    assert os.listdir(workdir) == []


def test_the_classifier_perceptual_term_is_the_frozen_domain_classifiers_feature_distance(tmp_path):
    from evaluation.classifier import save_classifier
    from models.classifier import Classifier

    model = Classifier(num_classes=10, nf=4)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))["params"]
    save_classifier(str(tmp_path / "classifier"), model, params, dataset="digits", image_size=8, num_channels=1)
    task = tasks.get_task(tiny_config(**{"autoencoder.perceptual": "classifier"}), str(tmp_path))
    assert task.frozen_record["perceptual"] == "classifier" and leaves_equal(task.frozen, params)
    x, x_hat = jax.random.uniform(jax.random.PRNGKey(1), (2, 2, 8, 8, 1), minval=-1, maxval=1)
    phi = lambda v: model.apply({"params": params}, (v + 1) / 2)["features"]  # noqa: E731
    np.testing.assert_allclose(task.distance(task.frozen, x, x_hat), jnp.sum((phi(x) - phi(x_hat)) ** 2, -1),
                               rtol=1e-5)
    assert float(task.reconstruction_loss(task.frozen, x, x)) == 0.0


def test_a_data_initialised_codebook_is_made_of_the_fresh_encoders_outputs(tmp_path):
    """vq_init='data': every code is one of the fresh encoder's outputs z_e on the first training batch, and
    the codes are distinct; taming's 'uniform' start lies within +-1/K; an unknown start is refused in one line."""
    vq = {"autoencoder.kind": "vq", "autoencoder.num_vq_embeddings": 16}
    task = tasks.get_task(tiny_config(**vq, **{"autoencoder.vq_init": "data"}), str(tmp_path / "data"))
    params = task.init_state().params["autoencoder"]
    codebook = np.asarray(params["quantize"]["embedding"]["embedding"])
    fresh = tasks.get_task(tiny_config(**vq), str(tmp_path / "uniform")).init_state().params["autoencoder"]
    uniform = np.asarray(fresh["quantize"]["embedding"]["embedding"])
    assert np.abs(uniform).max() <= 1 / 16
    rng = np.random.default_rng(task.config.seed)  # the batch _codebook_from_data reads
    picked = np.sort(rng.choice(len(task.train_data), task.config.training.batch_size, replace=False))
    x = 2.0 * task.train_data.source.read(picked)[0] / 255.0 - 1.0
    z_e = np.asarray(task.model.apply({"params": fresh}, jnp.asarray(x, jnp.float32), method="encode"))
    outputs = z_e.reshape(-1, z_e.shape[-1])
    distances = np.abs(codebook[:, None, :] - outputs[None]).max(-1)
    assert np.all(distances.min(1) < 1e-5) and len(np.unique(distances.argmin(1))) == 16
    assert np.abs(codebook).max() > 4 / 16  # encoder outputs: not the uniform start
    with pytest.raises(ConfigError, match=r"^config.autoencoder.vq_init='kmeans' must be one of"):
        tasks.get_task(tiny_config(**vq, **{"autoencoder.vq_init": "kmeans"}), str(tmp_path / "bad"))
