"""ControlNet on the framework's DDPM and NCSN++ U-Nets (models/controlnet.EncoderControlNet): a fresh one copies
the base's encoder weights and leaves the base's score exactly unchanged, a perturbed zero conv changes it, and
the ControlNet task trains and samples on a 'ddpm' base."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import losses
import models
import sde_lib
from configs.controlnet import canny_ddpm_digits
from models import controlnet
from modes import controlnet_sample
from tasks import controlnet as task_lib
from test_controlnet_task import random_variables, tiny
from test_models import random_variables as scaled_variables
from test_models import tiny_config
from training import loop
from training.checkpoint import Checkpointer
from training.state import create_train_state, get_optimizer

#: The tiny bases' encoder: conv_in, level 0's block and downsampler, level 1's block (attention at 4x4).
SKIPS = 4
#: Per base: (names of its encoder's parameters, some of its decoder's); mid block: two residual blocks, attention.
ENCODER_NAMES = {
    "ddpm": ({"Dense_0", "Dense_1", "Embed_0", "Conv_0", "Downsample_0", "AttnBlock_0", "AttnBlock_1",
              *(f"ResnetBlockDDPM_{i}" for i in range(4))}, {"Conv_1", "GroupNorm_0", "Upsample_0", "AttnBlock_2"}),
    # BigGAN blocks (level 0's, its downsampler, level 1's, the mid two) and the residual input pyramid's conv
    "ncsnpp": ({"Dense_0", "Dense_1", "Embed_0", "Conv_0", "Downsample_0", "AttnBlock_0", "AttnBlock_1",
                *(f"ResnetBlockBigGANpp_{i}" for i in range(5))}, {"Conv_1", "GroupNorm_0", "ResnetBlockBigGANpp_5"}),
}
ENCODER_NAMES["ddpm_patched"] = ENCODER_NAMES["ddpm"]  # 2x2 patches: the same modules, at 4x4 and 2x2


def config_for(base_dir="", n_iters=2, sampling=False, **model):
    """A seconds-long ControlNet on a two-level 8x8 DDPM with attention, config.model fields overridden."""
    config = tiny(canny_ddpm_digits.get_config())
    config.training.n_iters, config.training.snapshot_sampling = n_iters, sampling
    config.controlnet.base_workdir = str(base_dir)
    config.model.ch_mult, config.model.attn_resolutions = (1, 2), (4,)
    for name, value in model.items():
        setattr(config.model, name, value)
    return config


@pytest.fixture(scope="module", params=sorted(ENCODER_NAMES))
def built(request):
    """A class-conditional tiny base with random weights and a fresh ControlNet built on it: a DDPM, one on 2x2
    patches (image and hint folded alike), or an NCSN++ with FIR, BigGAN blocks, the residual input pyramid and
    Fourier features (fixed 'constants')."""
    if request.param == "ddpm":
        config = config_for(num_classes=3)
    elif request.param == "ddpm_patched":
        config = config_for(num_classes=3, patch_size=2)
    else:
        config = tiny_config(resblock_type="biggan", progressive="output_skip", progressive_input="residual",
                             num_classes=3)
    base_model = models.get_model(config)
    base = task_lib.Base(base_model, scaled_variables(config), {})
    controlled, params = task_lib.build(config, base)
    return request.param, config, base, controlled, params


def test_encoder_weights_are_the_base_s(built):
    kind, config, base, controlled, params = built
    base_params = base.variables["params"]
    shared = {name for name in params if not name.startswith("controlnet_")}
    encoder, decoder = ENCODER_NAMES[kind]  # the time and label embeddings, conv_in, the down path and the middle
    assert shared == encoder and not decoder & shared and decoder <= set(base_params)
    for name in shared:
        for a, b in zip(jax.tree.leaves(params[name]), jax.tree.leaves(base_params[name]), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    zero = [name for name in params if name.startswith("controlnet_") and name != "controlnet_cond_embedding"]
    assert len(zero) == SKIPS + 1 == controlnet.num_outputs(params)
    assert not any(np.any(np.asarray(v)) for name in zero for v in jax.tree.leaves(params[name]))
    assert not np.any(np.asarray(params["controlnet_cond_embedding"]["conv_out"]["kernel"]))


def test_fresh_controlnet_leaves_the_base_score_unchanged(built):
    kind, config, base, controlled, params = built
    sde, continuous = sde_lib.from_config(config), config.training.continuous
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, config.data.num_channels))
    t, labels = jnp.array([0.3, 0.9]), jnp.array([0, 2])
    hint = jnp.asarray(np.random.default_rng(1).random((2, 8, 8, 1)) > 0.5, jnp.float32)

    variables = {**base.variables, "params": params}  # the base's fixed collections serve the copied encoder
    down, mid = jax.jit(controlled.controlnet.apply)(variables, x, sde.noise_label(t, continuous), None, hint,
                                                     labels=labels)
    assert len(down) == SKIPS and all(not np.any(np.asarray(r)) for r in down + [mid])

    def score(model, variables, **given):
        return np.asarray(jax.jit(lambda v, g: models.get_score_fn(sde, model, v, continuous=continuous,
                                                                   labels=labels, **g)(x, t))(variables, given))

    plain = score(base.model, base.variables)
    assert np.all(np.isfinite(plain))
    np.testing.assert_array_equal(score(base.model, base.variables, control=(down, mid)), plain)
    np.testing.assert_allclose(score(controlled, {"params": params}, hint=hint, base=base.variables), plain,
                               rtol=0, atol=1e-5)
    perturbed = {**params, "controlnet_down_blocks_2": jax.tree.map(lambda p: p + 0.1,
                                                                    params["controlnet_down_blocks_2"])}
    changed = score(controlled, {"params": perturbed}, hint=hint, base=base.variables)
    assert np.abs(changed - plain).max() > 1e-3


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A 3-class 'ddpm' base run: a step-2 checkpoint of its train state and the sample grid the size check reads."""
    folder = tmp_path_factory.mktemp("ddpm_base")
    config = config_for(num_classes=3)
    state = create_train_state(jax.random.PRNGKey(0), random_variables(models.get_model(config)),
                               get_optimizer(config.optim))
    with Checkpointer(str(folder)) as checkpointer:
        checkpointer.save(2, state.replace(step=jnp.asarray(2, jnp.int32)), periodic=True, meta={"frozen": {}})
        checkpointer.wait()
    os.makedirs(folder / "samples")
    np.savez(folder / "samples" / "step_00000002.npz", image=np.zeros((4, 8, 8, 1), np.uint8))
    return folder


@pytest.mark.slow  # compiles a ControlNet train step and a sampler: minutes on 2 cores
def test_task_trains_and_samples_on_a_ddpm_base(base_dir, tmp_path, monkeypatch):
    """Trained with the base's label dropout; sampled with classes and classifier-free guidance."""
    dropped = []
    monkeypatch.setattr(losses, "drop_labels", lambda rng, labels, null, rate: dropped.append((null, rate)) or
                        jnp.full_like(labels, null))
    config = config_for(base_dir, sampling=True, num_classes=3)
    config.training.label_dropout = 0.25
    task = task_lib.ControlNetTask(config, str(tmp_path / "cn"))
    state = loop.train(task)
    assert dropped and set(dropped) == {(3, 0.25)}  # the score step's dropout, null label num_classes
    assert "controlnet_cond_embedding" in state.params and "Conv_1" not in state.params  # the base stays frozen
    assert task.frozen_record["step"] == 2 and os.path.isfile(tmp_path / "cn" / "samples" / "step_00000002.png")
    config = config_for(base_dir, num_classes=3)
    config.sampling.input_indices, config.sampling.num_samples, config.sampling.labels = "0", 2, "0,2"
    config.sampling.guidance, config.sampling.guidance_weight = "cfg", 1.5
    config.controlnet.conditioning_scale = ",".join(["0.5"] * (SKIPS + 1))
    path = controlnet_sample.sample(config, str(tmp_path / "cn"), "eval")
    written = np.load(path)
    assert path.endswith("_cfg_w1.5.npz") and os.path.isfile(path[:-4] + ".png")
    assert written["image"].shape == (4, 8, 8, 1) and np.all(written["conditioning_scale"] == 0.5)
    assert written["label"].tolist() == [0, 0, 2, 2] and written["row_condition"].tolist() == [0, 0]
