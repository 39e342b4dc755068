"""`--mode sample` of a ControlNet (modes/controlnet_sample.py): condition files, conditioning scales, class
labels reaching both networks, classifier-free guidance with the condition in both branches, bad input."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import models
import sde_lib
from models import controlnet, unet2d_condition
from modes import controlnet_sample
from samplers import guidance
from tasks import controlnet as task_lib
from tasks.score import make_sample_fn
from test_controlnet_ddpm import config_for
from test_models import random_variables as scaled_variables
from training import parallel
from training.validation import ConfigError


def test_conditioning_scale_is_one_number_or_one_per_output():
    spec = unet2d_condition.UNetSpec(block_out_channels=(8, 16), layers_per_block=(1, 1), heads=(2, 2),
                                     transformer_layers_per_block=(1, 1), down_block_types=("DownBlock2D",) * 2,
                                     up_block_types=("UpBlock2D",) * 2, norm_num_groups=4)
    model = controlnet.ControlNetModel(controlnet.ControlNetSpec(spec, 1, (8,)))
    n = controlnet.num_outputs(controlnet.param_shapes(model))
    assert n == 5  # conv_in, level 0's resnet and downsampler, level 1's resnet, the mid block
    assert controlnet_sample.parse_scale("0.5", n) == 0.5
    assert controlnet_sample.parse_scale("1,1,0.5,0,2", n) == (1.0, 1.0, 0.5, 0.0, 2.0)
    with pytest.raises(ConfigError, match="has 2 numbers; give one, or 5"):
        controlnet_sample.parse_scale("1,2", n)
    with pytest.raises(ConfigError, match="must be a number"):
        controlnet_sample.parse_scale("strong", n)


def test_condition_file_resized_matched_or_refused(tmp_path, caplog):
    edges = np.zeros((16, 16), np.uint8)
    edges[4:12, 4:6] = 255
    Image.fromarray(edges).save(tmp_path / "edges.png")
    with caplog.at_level("INFO"):
        cond = controlnet_sample.load_condition_file(str(tmp_path / "edges.png"), 8, 1)
    assert cond.shape == (1, 8, 8, 1) and cond.max() > 0.5 and "is 16x16; resized to 8x8" in caplog.text
    Image.fromarray(np.stack([edges] * 3, -1)).save(tmp_path / "gray_rgb.png")  # gray saved as RGB: matched
    matched = controlnet_sample.load_condition_file(str(tmp_path / "gray_rgb.png"), 16, 1)
    np.testing.assert_array_equal(matched[0, ..., 0], edges / np.float32(255))
    assert controlnet_sample.load_condition_file(str(tmp_path / "edges.png"), 16, 3).shape == (1, 16, 16, 3)
    color = np.stack([edges, 255 - edges, edges], -1)
    Image.fromarray(color).save(tmp_path / "color.png")
    with pytest.raises(ConfigError, match="color.png has 3 distinct channels; this ControlNet takes 1"):
        controlnet_sample.load_condition_file(str(tmp_path / "color.png"), 16, 1)
    with pytest.raises(ConfigError, match="is not a file"):
        controlnet_sample.load_condition_file(str(tmp_path / "missing.png"), 16, 1)


@pytest.fixture(scope="module")
def class_conditional():
    """(config, base, controlled, ControlNet params) on a tiny 3-class 'ddpm' base with random weights, the
    ControlNet's zero convs perturbed so that its residuals (and their dependence on the label) show."""
    config = config_for(num_classes=3)
    base = task_lib.Base(models.get_model(config), scaled_variables(config), {})
    controlled, params = task_lib.build(config, base)
    rng = np.random.default_rng(2)
    params = {name: jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(p.dtype), value)
              if name.startswith("controlnet_") else value for name, value in params.items()}
    return config, base, controlled, params


def score_for_labels(config, base, controlled, params, hint):
    """score_fn_for_labels(y) of the controlled network, as make_sample_fn builds it."""
    sde = sde_lib.from_config(config)
    return lambda y: models.get_score_fn(sde, controlled, {"params": params}, continuous=config.training.continuous,
                                         labels=y, hint=hint, base=base.variables)


def test_labels_reach_the_controlnet(class_conditional):
    config, base, controlled, params = class_conditional
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
    t, hint = jnp.array([0.3, 0.7]), jnp.asarray(np.random.default_rng(1).random((2, 8, 8, 1)) > 0.5, jnp.float32)
    time_cond = sde_lib.from_config(config).noise_label(t, config.training.continuous)
    y, other = jnp.array([0, 1]), jnp.array([2, 2])

    @jax.jit
    def outputs(net_labels, base_labels):
        """(Controlled with net_labels; the base with base_labels under the ControlNet's residuals for net_labels)"""
        control = controlled.controlnet.apply({"params": params}, x, time_cond, None, hint, labels=net_labels)
        return (controlled.apply({"params": params}, x, time_cond, net_labels, hint=hint, base=base.variables),
                base.model.apply(base.variables, x, time_cond, labels=base_labels, control=control))

    whole, parts = outputs(y, y)
    np.testing.assert_allclose(whole, parts, rtol=0, atol=1e-5)  # the ControlNet and the base both get y
    _, other_control = outputs(other, y)  # the base at y under the residuals of other labels
    assert np.abs(np.asarray(other_control - whole)).max() > 1e-3


def test_cfg_is_the_closed_form_with_the_condition_in_both_branches(class_conditional):
    """guided_score_fn 'cfg' on the controlled network: (1 + w) s(x | y, c) - w s(x | null, c); w = 0 (traced, so
    the doubled batch runs) is the conditional score."""
    config, base, controlled, params = class_conditional
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 8, 8, 1))
    t, hint = jnp.array([0.4, 0.8]), jnp.asarray(np.random.default_rng(4).random((2, 8, 8, 1)) > 0.5, jnp.float32)
    for_labels, y = score_for_labels(config, base, controlled, params, hint), jnp.array([1, 2])

    @jax.jit
    def scores(w):
        guided = guidance.guided_score_fn(for_labels, y, num_classes=3, guidance="cfg", weight=w)
        return guided(x, t), for_labels(y)(x, t), for_labels(jnp.full(2, 3))(x, t)

    guided, cond, null = scores(jnp.float32(0.0))
    assert np.abs(np.asarray(cond - null)).max() > 1e-3
    np.testing.assert_allclose(guided, cond, rtol=0, atol=1e-5)
    guided, cond, null = scores(jnp.float32(2.0))
    np.testing.assert_allclose(guided, 3 * cond - 2 * null, rtol=0, atol=1e-4)


def test_cfg_weight_0_samples_equal_unguided(class_conditional):
    config, base, controlled, params = class_conditional
    hint = jnp.asarray(np.random.default_rng(5).random((2, 8, 8, 1)) > 0.5, jnp.float32)
    labels, mesh, sde = jnp.array([0, 2]), parallel.make_mesh(), sde_lib.from_config(config)
    cfg = functools.partial(guidance.guided_score_fn, num_classes=3, guidance="cfg", weight=jnp.float32(0.0))
    draw = {name: make_sample_fn(config, sde, controlled, 2, mesh, guide=guide)(
        jax.random.PRNGKey(6), {"params": params}, labels, hint=hint, base=base.variables)
        for name, guide in (("plain", None), ("cfg", cfg))}
    np.testing.assert_allclose(draw["cfg"], draw["plain"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("changes, message", [
    ({"guidance": "cfg", "guidance_weight": 1.0}, "needs a class-conditional model"),
    ({"labels": "1,3"}, r"class\(es\) \[3\] outside 0..2"),
    ({"guidance": "cfg", "guidance_weight": 1.0, "labels": "null"}, "needs classes to guide towards"),
    ({"guidance": "classifier", "guidance_weight": 1.0}, "a ControlNet is guided by 'cfg'"),
    ({"prompt": "a 3"}, "the model is not text-conditioned"),
])
def test_bad_guidance_labels_or_prompts_refused_in_one_line(tmp_path, changes, message):
    config = config_for(tmp_path, num_classes=0 if "needs a class" in message else 3)
    config.sampling.update(changes)
    with pytest.raises(ConfigError, match=message) as refused:
        controlnet_sample.sample(config, str(tmp_path), "eval")
    assert "\n" not in str(refused.value)


def test_text_conditioned_base_of_another_architecture_refused(tmp_path):
    """Prompts reach a ControlNet through a 'unet2d_condition' base's cross-attention (tests/test_controlnet_text.py);
    a text-conditioned 'ddpm' is a mismatch, refused in one line."""
    config = config_for(tmp_path)
    config.text.conditional = True
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ConfigError, match="config.text.conditional needs config.model.name='unet2d_condition'"):
        task_lib.open_base(config, parallel.make_mesh())
