"""Concat conditioning (issue 20; tasks/concat.py): the conditions' closed forms, the networks' input conv, the
condition dropout of the score step, classifier-free guidance against the null image, a short train + sample,
and bad input in one line."""
import functools
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import datasets
import losses
import models
import sde_lib
from data_sources import conditions
from helpers import tiny_config
from models import layers
from modes import concat_sample
from modes.sample import sample
from samplers import guidance
from tasks import concat, latent
from tasks.score import ScoreTask, get_step_fn, init_state, make_sample_fn
from test_models import tiny_config as tiny_net_config
from training import loop, parallel
from training.state import get_optimizer
from training.validation import ConfigError

def concat_config(kind="lowres", **fields):
    """The tiny 8x8 DDPM of tests/helpers.py with a concat condition of `kind` (config.concat fields overridden)."""
    config = tiny_config()
    config.model.num_scales = 40  # forty ancestral steps (betas up to beta_max / num_scales < 1)
    config.model.ch_mult, config.model.attn_resolutions = (1,), ()  # one level: quick to compile
    config.concat.kind = kind
    config.concat.factor = 2
    for name, value in fields.items():
        config.concat[name] = value
    return config


def digits(n=4):
    return datasets.load_split(concat_config(), "test", host_index=0, host_count=1).source.read(np.arange(n))[0] / \
        np.float32(255)


# (1) the conditions' closed forms

@pytest.mark.parametrize("factor", [1, 2, 4])
def test_lowres_of_a_block_constant_image_is_itself(factor):
    small = np.random.default_rng(0).random((2, 8 // factor, 8 // factor, 3)).astype(np.float32)
    blocks = small.repeat(factor, axis=1).repeat(factor, axis=2)
    np.testing.assert_allclose(conditions.lowres(blocks, factor), blocks, atol=1e-6)
    np.testing.assert_allclose(conditions.area_downsample(conditions.lowres(blocks, factor, "bilinear"), factor)
                               if factor == 1 else conditions.lowres(np.full((1, 8, 8, 1), 0.3), factor, "bilinear"),
                               blocks if factor == 1 else np.full((1, 8, 8, 1), 0.3), atol=1e-6)
    x = np.random.default_rng(1).random((2, 8, 8, 3)).astype(np.float32)  # A_k of U_k A_k x is A_k x
    np.testing.assert_allclose(conditions.area_downsample(conditions.lowres(x, factor), factor),
                               conditions.area_downsample(x, factor), atol=1e-6)


def test_bilinear_upsampling_interpolates_between_block_centres():
    small = np.array([0.0, 1.0], np.float32).reshape(1, 1, 2, 1).repeat(2, axis=1)  # 2x2: left 0, right 1
    up = conditions.lowres(small.repeat(4, axis=1).repeat(4, axis=2), 4, "bilinear")[0, 0, :, 0]
    np.testing.assert_allclose(up, [0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1], atol=1e-6)  # clamped beyond centres


def test_inpaint_mask_and_masked_image_are_consistent_and_fixed_per_index():
    x = digits(4)
    c = conditions.compute_concat("inpaint", x, np.array([5, 6, 7, 8]), seed=3)
    m = c[..., -1:]
    assert c.shape == (4, 8, 8, 2) and set(np.unique(m)) <= {0.0, 1.0} and np.all(m.sum((1, 2, 3)) > 0)
    np.testing.assert_array_equal(c[..., :-1], x * (1 - m))
    np.testing.assert_array_equal(conditions.compute_concat("inpaint", x[2:3], [7], seed=3), c[2:3])  # per index
    masks = [conditions.inpaint_mask(16, 3, i) for i in range(20)]
    assert len({m.tobytes() for m in masks}) == 20  # boxes and strokes differ between examples
    assert not np.array_equal(conditions.inpaint_mask(16, 4, 0), masks[0])  # and between seeds


def test_foreground_is_the_thresholded_gray_level():
    x = np.array([[0.2, 0.6], [0.5, 0.9]], np.float32).reshape(1, 2, 2, 1).repeat(3, -1)
    np.testing.assert_array_equal(conditions.compute_concat("foreground", x, [0], threshold=0.5)[0, ..., 0],
                                  [[0, 1], [0, 1]])
    assert [conditions.concat_channels(k, 3) for k in conditions.CONCAT_KINDS] == [3, 4, 1]


# (2) the networks: unchanged without concat, C + C_c input channels with it

def first_conv_kernel(params, name):
    return traverse_util.flatten_dict(params)[(name, "kernel")]


@pytest.mark.parametrize("name,conv", [("ddpm", "Conv_0"), ("ncsnpp", "Conv_0"), ("unet2d_condition", "conv_in")])
@pytest.mark.parametrize("kind,extra", [("lowres", 3), ("inpaint", 4), ("foreground", 1)])
def test_the_input_conv_takes_the_condition_channels(name, conv, kind, extra):
    """3-channel data: C_c = 3 (lowres), 4 (inpaint), 1 (foreground); only the input conv's kernel changes."""
    if name == "ddpm":
        config = tiny_net_config(name="ddpm", norm_groups="quarter_channels")
    elif name == "ncsnpp":
        config = tiny_net_config(resblock_type="biggan", progressive_input="residual")
    else:
        config = tiny_net_config(name="unet2d_condition", num_heads=2, cross_attention_dim=8, norm_num_groups=4)
    model = models.get_model(config)
    plain = jax.eval_shape(lambda: init_state(config, model, get_optimizer(config.optim)).params)
    config.concat.kind = kind
    with_concat = jax.eval_shape(lambda: init_state(config, model, get_optimizer(config.optim)).params)
    assert first_conv_kernel(plain, conv).shape[-2] == 3
    assert first_conv_kernel(with_concat, conv).shape[-2] == 3 + extra
    flat_plain, flat_concat = traverse_util.flatten_dict(plain), traverse_util.flatten_dict(with_concat)
    assert flat_plain.keys() == flat_concat.keys()
    assert {k for k in flat_plain if flat_plain[k].shape != flat_concat[k].shape} == {(conv, "kernel")}


def test_the_condition_enters_only_through_the_input_convs_extra_channels():
    """With the extra input channels' kernel zeroed, the concat network is the plain one with the rest of it."""
    config = concat_config("lowres")
    model = models.get_model(config)
    variables = models.init_model(jax.random.PRNGKey(0), config, model, **concat.init_inputs(config))
    kernel = variables["params"]["Conv_0"]["kernel"]
    zeroed = jax.tree.map(lambda v: v, variables)
    zeroed["params"]["Conv_0"]["kernel"] = kernel.at[:, :, 1:].set(0.0)
    plain = jax.tree.map(lambda v: v, variables)
    plain["params"]["Conv_0"]["kernel"] = kernel[:, :, :1]
    x, t = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1)), jnp.array([3.0, 7.0])
    c = jnp.asarray(conditions.lowres(digits(2), 2))
    np.testing.assert_allclose(model.apply(zeroed, x, t, concat=c), model.apply(plain, x, t), atol=1e-5)
    assert not np.allclose(model.apply(variables, x, t, concat=c), model.apply(variables, x, t, concat=0 * c))


# (3) condition dropout

def test_dropout_replaces_exactly_the_dropped_conditions_by_the_null_image():
    c = jnp.asarray(conditions.lowres(digits(4), 2)) + 0.1
    key = jax.random.PRNGKey(5)
    dropped = losses.drop_labels(key, c, 0.0, 0.5)
    drop = np.asarray(jax.random.uniform(key, (4,)) < 0.5)
    assert 0 < drop.sum() < 4
    np.testing.assert_array_equal(np.asarray(dropped)[drop], 0.0)
    np.testing.assert_array_equal(np.asarray(dropped)[~drop], np.asarray(c)[~drop])


def test_the_score_step_trains_on_the_null_image_at_the_dropout_rate():
    """Dropout 1 gives the step of the zero condition; dropout 0 keeps the condition (same rngs otherwise). The
    fresh output conv is zero, so the loss does not see c yet: the updated parameters do."""
    config = concat_config("foreground")
    sde, model = sde_lib.from_config(config), models.get_model(config)
    state = init_state(config, model, get_optimizer(config.optim))
    given = concat.network_inputs(config)
    images = digits(4)
    batch = {"image": jnp.asarray(images), "label": jnp.zeros(4, jnp.int32),
             "condition": jnp.asarray(conditions.threshold_mask(images))}
    zero = {**batch, "condition": jnp.zeros_like(batch["condition"])}
    kw = dict(train=True, optimizer=get_optimizer(config.optim), continuous=False, reduce_mean=True,
              conditions=given)
    always = jax.jit(get_step_fn(sde, model, concat_dropout=1.0, **kw))
    never = jax.jit(get_step_fn(sde, model, concat_dropout=0.0, **kw))
    dropped, null, kept = (jax.tree.leaves(step(state, b)[0].params)
                           for step, b in ((always, batch), (never, zero), (never, batch)))
    for a, b in zip(dropped, null):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert max(float(jnp.abs(a - b).max()) for a, b in zip(kept, null)) > 1e-5


# (4) classifier-free guidance against the null image

def test_cfg_on_the_condition_closed_form_and_weight_zero_sampling():
    config = concat_config("lowres")
    sde, model = sde_lib.from_config(config), models.get_model(config)
    variables = models.init_model(jax.random.PRNGKey(0), config, model, **concat.init_inputs(config))
    c = jnp.asarray(conditions.lowres(digits(4), 2))
    x, t = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1)), jnp.full((4,), 0.5)

    def score_for(y):
        return models.get_score_fn(sde, model, variables, continuous=False, labels=y[0], concat=y[1])

    s_c, s_null = score_for((None, c))(x, t), score_for((None, 0 * c))(x, t)
    for w in (2.0, -1.0):
        config.sampling.guidance, config.sampling.guidance_weight = "cfg", w
        guided = concat_sample.make_guide(config)(score_for, (None, c))(x, t)
        np.testing.assert_allclose(guided, (1 + w) * s_c - w * s_null, atol=1e-4)

    mesh = parallel.make_mesh()
    rng = jax.random.PRNGKey(7)
    plain = make_sample_fn(config, sde, model, 4, mesh)(rng, variables, concat=c)
    w0 = functools.partial(guidance.classifier_free_guidance, null_label=(None, 0.0), w=jnp.float32(0.0))
    guided = make_sample_fn(config, sde, model, 4, mesh, guide=w0)(rng, variables, concat=c)  # both branches
    np.testing.assert_allclose(guided, plain, atol=1e-5)


def test_class_labels_with_the_condition_step_sampling_and_cfg_dropping_both():
    """A class-conditional concat model: the step trains on (labels, c) with each dropped independently; the
    network reads both; cfg is (1 + w) s(x | y, c) - w s(x | null, null), and changes the samples."""
    config = concat_config("lowres")
    config.model.num_classes, config.training.label_dropout = 10, 0.5
    sde, model = sde_lib.from_config(config), models.get_model(config)
    state = init_state(config, model, get_optimizer(config.optim))
    images = digits(4)
    batch = {"image": jnp.asarray(images), "label": jnp.array([1, 2, 3, 4]),
             "condition": jnp.asarray(conditions.lowres(images, 2))}
    step = jax.jit(get_step_fn(sde, model, train=True, optimizer=get_optimizer(config.optim), continuous=False,
                               num_classes=10, label_dropout=0.5, concat_dropout=0.5,
                               conditions=concat.network_inputs(config)))
    new, loss = step(state, batch)
    assert np.isfinite(float(loss)) and int(new.step) == 1

    leaves, tree = jax.tree.flatten(state.ema_variables)  # fresh output convs are zero: perturb every weight
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    variables = jax.tree.unflatten(tree, [v + 0.1 * jax.random.normal(k, v.shape) for v, k in zip(leaves, keys)])
    c, y = batch["condition"], batch["label"]
    x, t = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1)), jnp.full((4,), 0.5)

    def score_for(yc):
        return models.get_score_fn(sde, model, variables, continuous=False, labels=yc[0], concat=yc[1])

    s_yc, s_null = score_for((y, c))(x, t), score_for((jnp.full(4, 10), 0 * c))(x, t)
    assert np.abs(s_yc - score_for((jnp.full(4, 10), c))(x, t)).max() > 1e-2  # the label is read
    assert np.abs(s_yc - score_for((y, 0 * c))(x, t)).max() > 1e-2  # and the condition
    config.sampling.guidance, config.sampling.guidance_weight = "cfg", 2.0
    guided = concat_sample.make_guide(config, 10)(score_for, (y, c))(x, t)
    np.testing.assert_allclose(guided, 3.0 * s_yc - 2.0 * s_null, atol=1e-4)

    mesh, rng = parallel.make_mesh(), jax.random.PRNGKey(7)
    plain = make_sample_fn(config, sde, model, 4, mesh)(rng, variables, y, concat=c)
    cfg = make_sample_fn(config, sde, model, 4, mesh, guide=concat_sample.make_guide(config, 10))(
        rng, variables, y, concat=c)
    assert plain.shape == (4, 8, 8, 1) and np.abs(np.asarray(cfg) - np.asarray(plain)).max() > 1e-2


# (5) a short train + sample through ScoreTask and --mode sample

@pytest.mark.parametrize("kind,num_classes", [("inpaint", 0), ("lowres", 10)])
def test_train_snapshot_and_sample_mode(kind, num_classes, tmp_path):
    config = concat_config(kind)
    config.model.num_classes, config.training.label_dropout = num_classes, 0.2
    config.training.n_iters = 4
    config.training.snapshot_sampling = True
    config.training.snapshot_num_samples = 4
    config.training.eval_freq = 0
    workdir = str(tmp_path)
    loop.train(ScoreTask(config, workdir))
    with np.load(os.path.join(workdir, "samples", "step_00000004.npz")) as f:
        channels = conditions.concat_channels(kind, 1)
        assert f["image"].shape == (4, 8, 8, 1) and f["condition"].shape == (4, 8, 8, channels)
        assert f["reference"].shape == (4, 8, 8, 1)
    assert os.path.isfile(os.path.join(workdir, "samples", "step_00000004.png"))
    config.sampling.input_indices, config.sampling.num_samples = "0,3", 2
    config.sampling.guidance, config.sampling.guidance_weight = "cfg", 1.0
    config.sampling.labels = "3,5" if num_classes else ""
    path = sample(config, workdir, "eval")
    assert path.endswith(f"concat_{kind}_step4_pc_cfg_w1.npz")
    rows = 2 * (2 if num_classes else 1)  # every input with every class
    with np.load(path) as f:
        assert f["image"].shape == (2 * rows, 8, 8, 1) and f["condition"].shape == (2, 8, 8, channels)
        assert f["input_index"].tolist() == [0, 3] and f["row_condition"].tolist() == sorted([0, 1] * (rows // 2))
        assert f["label"].tolist() == ([3, 3, 5, 5] * 2 if num_classes else [-1] * 4)
    assert os.path.isfile(path[:-4] + ".png")
    if kind != "inpaint":
        config.sampling.outpaint = "4,2,2"
        with pytest.raises(ConfigError, match="outpaint needs an inpainting model"):
            sample(config, workdir, "eval")
        return
    # outpainting: the input, resized to 4x4, at (2, 2) of the canvas; the region to fill is all around it
    config.sampling.outpaint, config.sampling.guidance, config.sampling.guidance_weight = "4,2,2", "none", 0.0
    with np.load(sample(config, workdir, "eval")) as f:
        m, known_pixels = f["condition"][0, ..., -1] / 255, np.repeat(f["condition"][..., 0], 2, axis=0)
        assert f["image"].shape == (4, 8, 8, 1) and f["completed"].shape == (4, 8, 8, 1)
        np.testing.assert_array_equal(m[2:6, 2:6], 0)
        assert m.sum() == 64 - 16 and np.all(f["condition"][..., -1] == f["condition"][:1, ..., -1])
        # zero error on the known pixels; the samples elsewhere
        np.testing.assert_array_equal(f["completed"][:, 2:6, 2:6, 0], known_pixels[:, 2:6, 2:6])
        np.testing.assert_array_equal(f["completed"][:, m > 0], f["image"][:, m > 0])


@pytest.mark.slow  # 21 s; the class-label test covers the step and guidance with a second condition
def test_prompts_with_the_condition_train_and_sample(tmp_path):
    """A text-conditioned U-Net with a lowres condition: the snapshot samples test captions with their
    conditions; --mode sample takes prompts and the condition, guided against the empty prompt and null image."""
    from test_text_score import tiny_config as text_config

    config = text_config(n_iters=2)
    config.concat.kind, config.concat.factor, config.concat.dropout = "lowres", 2, 0.2
    workdir = str(tmp_path)
    loop.train(ScoreTask(config, workdir))
    with np.load(os.path.join(workdir, "samples", "step_00000002.npz")) as f:
        assert f["image"].shape == (2, 8, 8, 1) and f["condition"].shape == (2, 8, 8, 1)
    s = config.sampling
    s.input_indices, s.num_samples, s.prompt = "1", 1, "a 3 left of a 7|a 7 left of a 3"
    out = {}
    for w in (0.0, 4.0):
        s.guidance, s.guidance_weight = ("cfg", w) if w else ("none", 0.0)
        with np.load(sample(config, workdir, "eval")) as f:
            assert f["image"].shape == (2, 8, 8, 1) and list(f["prompt"]) == s.prompt.split("|")
            out[w] = f["image"].astype(int)
    assert np.abs(out[4.0] - out[0.0]).max() > 2


# (6) --mode eval: samples of the test conditions, FD and the task's figures, in resumable rounds

def test_task_figures_closed_forms():
    from modes.concat_eval import bicubic, task_figures

    truth = digits(3)
    config = concat_config("lowres")
    flat = np.full((1, 8, 8, 1), 0.3, np.float32)
    np.testing.assert_allclose(bicubic(flat, 2), flat, atol=1e-6)  # a constant image is its own upsampling
    figures = task_figures(config, truth, truth, conditions.lowres(truth, 2))
    np.testing.assert_array_equal(figures["psnr"], 100.0)
    assert np.all((figures["bicubic_psnr"] > 5) & (figures["bicubic_psnr"] < 100))
    config = concat_config("inpaint")
    c = conditions.compute_concat("inpaint", truth, np.arange(3), seed=0)
    m = c[..., -1:]
    wrong_inside = truth * (1 - m) + (1 - truth) * m  # right on the known pixels, wrong on the rest
    np.testing.assert_array_equal(task_figures(config, wrong_inside, truth, c)["known_error"], 0.0)
    shifted = np.clip(truth + 0.1, 0, 1)
    np.testing.assert_allclose(task_figures(config, shifted, truth, c)["known_error"],
                               np.sum((1 - m) * (shifted - truth), axis=(1, 2, 3)) / np.sum(1 - m, axis=(1, 2, 3)),
                               rtol=1e-6)
    np.testing.assert_allclose(concat.complete(c, wrong_inside), wrong_inside, atol=1e-6)
    config = concat_config("foreground")
    np.testing.assert_array_equal(task_figures(config, truth, truth, conditions.threshold_mask(truth))
                                  ["foreground_agreement"], 1.0)


@pytest.mark.parametrize("kind", ["lowres", pytest.param("inpaint", marks=pytest.mark.slow)])  # one in the default suite
def test_eval_mode_reports_fd_and_task_figures_and_resumes(kind, tmp_path):
    from modes.evaluate import evaluate
    from modes.train import train_classifier

    config = concat_config(kind)
    t = config.training
    t.n_iters, t.snapshot_freq, t.eval_freq = 4, 4, 0
    config.classifier.nf, config.classifier.n_iters, config.classifier.batch_size = 4, 4, 16
    e = config.eval
    e.batch_size, e.num_samples, e.enable_sampling, e.enable_loss, e.kid_subsets, e.kid_subset_size = \
        8, 12, True, True, 2, 4
    workdir = str(tmp_path)
    loop.train(ScoreTask(config, workdir))
    train_classifier(config, workdir)
    first = evaluate(config, workdir, "eval")[0]
    figures = first["concat"]
    assert np.isfinite(first["eval_loss"]) and first["samples"]["num_images"] == 12
    if kind == "lowres":
        assert 0 < figures["psnr"] < 100 and 5 < figures["bicubic_psnr"] < 100
    else:
        assert 0 < figures["known_error"] < 1 and figures["completed"]["num_images"] == 12
        assert figures["completed"]["fd"] != first["samples"]["fd"]
    rounds = sorted(os.listdir(os.path.join(workdir, "eval", "ckpt_1")))
    assert rounds == ["concat_samples_00000.npz", "concat_samples_00001.npz"]
    stamps = [os.path.getmtime(os.path.join(workdir, "eval", "ckpt_1", r)) for r in rounds]
    os.remove(os.path.join(workdir, "eval", "ckpt_1", rounds[1]))  # as if killed in round 1
    again = evaluate(config, workdir, "eval")[0]
    assert os.path.getmtime(os.path.join(workdir, "eval", "ckpt_1", rounds[0])) == stamps[0]  # reused
    assert again["concat"] == figures and again["samples"] == first["samples"]


# (7) bad input, one line each

@pytest.mark.parametrize("fields,message", [
    (dict(kind="superres"), "config.concat.kind='superres' must be '' (off) or one of"),
    (dict(factor=3), "config.concat.factor=3 must divide config.data.image_size=8"),
    (dict(upsample="cubic"), "config.concat.upsample='cubic' must be one of"),
    (dict(dropout=1.0), "config.concat.dropout=1.0 must lie in [0, 1)"),
])
def test_bad_concat_sections_are_one_line(fields, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        concat.validate(concat_config(**{"kind": "lowres", **fields}))


def test_bad_conditions_and_sampling_requests_are_one_line():
    config = concat_config("inpaint")
    with pytest.raises(ConfigError, match=re.escape("shape (2, 8, 8, 1) was given; config.concat.kind='inpaint' on "
                                                    "8x8 data takes (N, 8, 8, 2)")):
        concat.check_condition(config, np.zeros((2, 8, 8, 1)))
    with pytest.raises(ConfigError, match=re.escape("takes (N, 8, 8, 2)")):
        concat.check_condition(config, np.zeros((2, 16, 16, 2)))
    with pytest.raises(ValueError, match=re.escape("The concat condition has shape (2, 4, 4, 2); the input is "
                                                   "(2, 8, 8, 1)")):
        layers.concat_input(jnp.zeros((2, 8, 8, 1)), jnp.zeros((2, 4, 4, 2)))
    config.sampling.guidance = "classifier"
    with pytest.raises(ConfigError, match="guided by 'cfg'"):
        concat_sample.validate(config)
    config.sampling.guidance, config.sampling.task = "none", "inpaint"
    with pytest.raises(ConfigError, match="samples from its condition"):
        concat_sample.validate(config)
    config.eval.enable_bpd = True
    with pytest.raises(ConfigError, match="bits/dim .* are not wired for it"):
        from modes.evaluate import evaluate
        evaluate(config, "unused", "eval")
    config.sampling.task, config.sampling.negative_prompt = "generate", "a 1"
    with pytest.raises(ConfigError, match="negative_prompt act only with guidance 'cfg'"):
        concat_sample.validate(config)


def test_a_condition_file_is_resized_and_its_channels_converted(tmp_path):
    from PIL import Image

    from modes.sample import load_inputs

    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    config = concat_config("lowres")
    config.sampling.input = str(tmp_path / "x.png")
    images, index = load_inputs(config)
    assert images.shape == (1, 8, 8, 1) and index.tolist() == [-1]
    config.sampling.input_indices = "0"
    with pytest.raises(ConfigError, match="needs exactly one of config.sampling.input"):
        load_inputs(config)


def test_a_latent_model_sees_the_condition_at_its_resolution_with_the_pixels_channels():
    config = concat_config("lowres")
    arch = {"kind": "kl", "block_out_channels": [8, 8], "latent_channels": 4}
    fake = latent.Latents("ae", None, {}, {"image_size": 8, "architecture": arch})
    net = latent.score_config(config, fake)
    assert (net.data.image_size, net.data.num_channels, concat.channels(net)) == (4, 4, 1)
    assert concat.init_inputs(net)["concat"].shape == (1, 4, 4, 1)
    c = conditions.lowres(digits(2), 2)
    np.testing.assert_allclose(concat.to_denoiser(c, net), conditions.area_downsample(digits(2), 2), atol=1e-6)
