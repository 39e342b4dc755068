"""The ControlNet task (tasks/controlnet.py): a fresh ControlNet leaves the base's score exactly unchanged, the
frozen base stays outside the train state, resuming equals the straight run, and mismatched bases are refused
in one line before anything is written."""
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
import sde_lib
from configs.controlnet import canny_digits
from data_sources import conditions
from modes import controlnet_sample
from tasks import controlnet as task_lib
from training import loop
from training.checkpoint import Checkpointer
from training.state import create_train_state, get_optimizer
from training.validation import ConfigError


def tiny(config):
    """A seconds-long version of a digits ControlNet config (and of its base)."""
    t, m = config.training, config.model
    t.batch_size, t.log_freq, t.eval_freq = 8, 2, 0
    t.snapshot_freq = t.snapshot_freq_for_preemption = 2
    t.snapshot_num_samples = 4
    config.eval.batch_size = 8
    m.ch_mult = (1,)
    m.nf, m.norm_num_groups, m.num_scales = 8, 4, 40  # betas up to beta_max / num_scales < 1
    config.optim.warmup = 0
    return config


def config_for(base_dir, n_iters=2, sampling=False, **model):
    config = tiny(canny_digits.get_config())
    config.training.n_iters = n_iters
    config.controlnet.base_workdir = str(base_dir)
    config.training.snapshot_sampling = sampling
    for name, value in model.items():
        setattr(config.model, name, value)
    return config


def random_variables(model, seed=0):
    """Random-normal variables of `model` on 8x8x1 digits (a fresh init's zero layers would hide what is compared,
    and a real init or training step compiles slowly on CPU)."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(1), jnp.zeros((1, 8, 8, 1)), jnp.zeros(1))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), shapes)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A base 'unet2d_condition' run: a step-2 checkpoint of its train state as ScoreTask saves it, and the
    sample grid the image-size check reads."""
    folder = tmp_path_factory.mktemp("base")
    config = tiny(canny_digits.get_config())
    optimizer = get_optimizer(config.optim)
    state = create_train_state(jax.random.PRNGKey(0), random_variables(models.get_model(config)), optimizer)
    with Checkpointer(str(folder)) as checkpointer:
        checkpointer.save(2, state.replace(step=jnp.asarray(2, jnp.int32)), periodic=True, meta={"frozen": {}})
        checkpointer.wait()
    os.makedirs(folder / "samples")
    np.savez(folder / "samples" / "step_00000002.npz", image=np.zeros((4, 8, 8, 1), np.uint8))
    return folder


def test_fresh_controlnet_leaves_the_base_score_unchanged():
    config = config_for("unused")
    base_model = models.get_model(config)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
    base = task_lib.Base(base_model, random_variables(base_model), {})
    controlled, cn_params = task_lib.build(config, base)
    sde = sde_lib.from_config(config)
    hint = jnp.asarray(np.random.default_rng(1).random((2, 8, 8, 1)) > 0.5, jnp.float32)
    t = jnp.array([0.3, 0.9])

    c_t = sde.noise_label(t, False)
    down, mid = jax.jit(controlled.controlnet.apply)({"params": cn_params}, x, c_t, None, hint)
    assert all(not np.any(np.asarray(r)) for r in down + [mid])  # the zero convs give exact zeros

    jitted = [jax.jit(lambda v, g, m=m: models.get_score_fn(sde, m, v, continuous=False, **g)(x, t))
              for m in (base_model, controlled)]

    def score(model, variables, **given):
        return np.asarray(jitted[model is controlled](variables, given))

    plain = score(base_model, base.variables)
    assert np.all(np.isfinite(plain))
    # exactly the base's score with those residuals as its control ...
    np.testing.assert_array_equal(score(base_model, base.variables, control=(down, mid)), plain)
    # ... and, traced as one program (the ControlNet inside the score function), equal up to XLA's fusion
    # rounding, while a nonzero zero-conv changes it
    np.testing.assert_allclose(score(controlled, {"params": cn_params}, hint=hint, base=base.variables), plain,
                               rtol=0, atol=1e-5)
    cn_params["controlnet_mid_block"]["bias"] = 0.1 * jnp.ones_like(cn_params["controlnet_mid_block"]["bias"])
    assert np.abs(score(controlled, {"params": cn_params}, hint=hint, base=base.variables) - plain).max() > 1e-3


@pytest.mark.slow  # compiles a ControlNet train step and a sampler: minutes on 2 cores
def test_train_resume_frozen_record_and_refusals(base_dir, tmp_path):
    straight = loop.train(task_lib.ControlNetTask(config_for(base_dir, 4, sampling=True),
                                                  str(tmp_path / "straight")))
    loop.train(task_lib.ControlNetTask(config_for(base_dir, 2), str(tmp_path / "resumed")))
    task = task_lib.ControlNetTask(config_for(base_dir, 4), str(tmp_path / "resumed"))
    resumed = loop.train(task)
    for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the base is frozen: not in the train state, which holds the ControlNet (and its hint encoder) alone
    assert "controlnet_cond_embedding" in resumed.params and "up_blocks_0" not in resumed.params
    assert task.frozen_record["base_workdir"] == str(base_dir) and task.frozen_record["step"] == 2
    assert os.path.isfile(tmp_path / "straight" / "samples" / "step_00000004.png")
    assert set(task_lib.json.load(open(tmp_path / "straight" / "edge_f1.json"))) == {"2", "4"}

    config = config_for(base_dir, 4)  # --mode sample of the straight run, the conditions of two test images
    config.sampling.input_indices, config.sampling.num_samples = "0,1", 2
    written = np.load(controlnet_sample.sample(config, str(tmp_path / "straight"), "eval"))
    assert written["image"].shape == (4, 8, 8, 1) and written["condition"].shape == (2, 8, 8, 1)
    assert os.path.isfile(str(tmp_path / "straight" / "eval" / "controlnet_step4_pc_s1_edge_f1.json"))

    other = tmp_path / "other_base"  # the same weights under another run's name: another base
    shutil.copytree(base_dir, other)
    with pytest.raises(ConfigError, match=rf'trained against .*"base_workdir": "{base_dir}".* but this run\'s '
                                          rf'config gives .*"base_workdir": "{other}"'):
        loop.train(task_lib.ControlNetTask(config_for(other, 6), str(tmp_path / "resumed")))

    refusals = {"is not the network of this config": config_for(base_dir, nf=16),
                "was trained on 8x8x1 images, this config on 16x16x1": config_for(base_dir)}
    refusals["was trained on 8x8x1 images, this config on 16x16x1"].data.image_size = 16
    for message, config in refusals.items():
        with pytest.raises(ConfigError, match=message):
            loop.train(task_lib.ControlNetTask(config, str(tmp_path / "refused")))
    with pytest.raises(ConfigError, match="config.controlnet.base_workdir is empty"):
        task_lib.ControlNetTask(config_for(""), str(tmp_path / "refused"))
    assert not os.path.exists(tmp_path / "refused")


def test_edge_agreement_of_the_images_themselves_and_of_shuffled_ones():
    """Samples equal to their images agree exactly; against the images rolled by one they score what edge_f1 gives
    those pairs, below 1 for digits with different edges."""
    rng = np.random.default_rng(0)
    images = np.zeros((4, 16, 16, 1), np.float32)
    for i, (top, left, size) in enumerate(rng.integers((1, 1, 4), (6, 6, 9), (4, 3))):
        images[i, top:top + size, left:left + size] = 1.0  # squares of other places and sizes
    f1 = task_lib.edge_agreement(images, images, sigma=0.5)
    assert f1["1px"] == f1["exact"] == 1.0
    edges = conditions.canny(images, 0.5)
    assert f1["shuffled"] == pytest.approx(np.mean(conditions.edge_f1(edges, np.roll(edges, 1, axis=0), 0)))
    assert f1["shuffled"] < 0.9
