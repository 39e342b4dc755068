"""A ControlNet on a text-conditioned base (tasks/controlnet.py, configs/controlnet/canny_text_mnist.py): a fresh
one leaves the base's score for a prompt exactly unchanged, the prompt's context reaches both networks, the first
training loss is the base's, the base's text tower is frozen and recorded (a resume against another tower is
refused naming it), and `--mode sample` takes prompts."""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
import models
import sde_lib
from configs.controlnet import canny_text_mnist
from data_sources.tokenizer import WordTokenizer
from models.prompt import PromptConditioning
from modes import controlnet_sample
from tasks import controlnet as task_lib
from tasks import score, text
from training import loop, parallel
from training.checkpoint import Checkpointer, abstract_like
from training.state import create_train_state, get_optimizer
from training.validation import ConfigError

CAPTIONS = [f"a {a} left of a {b}" for a in range(10) for b in range(10)]
PROMPTS = ["a 3 left of a 7", "a 7 left of a 3"]


def tiny_config(base_dir=""):
    """canny_text_mnist at 8x8 with a one-level U-Net and a one-layer text tower of width 16."""
    config = canny_text_mnist.get_config()
    config.data.image_size, config.data.num_pairs = 8, 32
    t = config.training
    t.batch_size, t.n_iters, t.log_freq, t.eval_freq, t.snapshot_sampling = 4, 2, 2, 0, False
    t.snapshot_freq = t.snapshot_freq_for_preemption = 2
    m = config.model
    m.nf, m.ch_mult, m.attn_resolutions, m.num_heads, m.norm_num_groups, m.cross_attention_dim = \
        8, (1,), (8,), 2, 4, 16
    config.text.update(width=16, layers=1, heads=2)
    config.sampling.num_steps = 2
    config.eval.batch_size = 4
    config.optim.warmup = 0
    config.controlnet.base_workdir = str(base_dir)
    return config


def random_base(config, seed=0):
    """A task_lib.Base of random-normal U-Net and text-tower weights (a fresh init's zero layers would hide what
    is compared), its text tower frozen for the ControlNet as open_base gives it."""
    tokenizer = WordTokenizer.build(CAPTIONS, config.text.context_length)
    encoder = text.text_tower(text.tower_fields(config), tokenizer)
    model = models.get_model(config)
    ids = jnp.asarray(tokenizer([""]))
    shapes = {"unet": jax.eval_shape(model.init, jax.random.PRNGKey(1), jnp.zeros((1, 8, 8, 1)), jnp.zeros(1),
                                     context=jnp.zeros((1, ids.shape[1], 16)))["params"],
              "text_model": jax.eval_shape(encoder.init, jax.random.PRNGKey(2), ids)["params"]}
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), shapes)
    prompt = PromptConditioning(encoder, tokenizer("")[0], joint=False, network="controlnet")
    return task_lib.Base(model, {"params": params["unet"]}, {}, tokenizer, {"text_model": params["text_model"]},
                         prompt)


def perturbed(params, scale=0.1, seed=2):
    """The ControlNet's zero convs moved off zero, so that its residuals (and what they depend on) show."""
    rng = np.random.default_rng(seed)
    return {name: jax.tree.map(lambda p: p + scale * rng.standard_normal(p.shape).astype(p.dtype), value)
            if name.startswith("controlnet_") and name != "controlnet_cond_embedding" else value
            for name, value in params.items()}


@pytest.fixture(scope="module")
def built():
    config = tiny_config()
    base = random_base(config)
    controlled, params = task_lib.build(config, base)
    return config, base, controlled, params


def test_fresh_controlnet_leaves_the_base_score_for_a_prompt_unchanged(built):
    config, base, controlled, params = built
    copied = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    attention = [k for k in copied if "attentions" in k]  # the encoder's cross-attention, copied from the base
    assert attention and all(np.array_equal(copied[k], leaf) for k, leaf in (
        (jax.tree_util.keystr(p), v) for p, v in jax.tree_util.tree_flatten_with_path(base.variables["params"])[0])
        if k in attention)
    sde = sde_lib.from_config(config)
    x, t = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1)), jnp.array([0.3, 0.9])
    hint = jnp.asarray(np.random.default_rng(1).random((2, 8, 8, 1)) > 0.5, jnp.float32)
    tokens = jnp.asarray(base.tokenizer(PROMPTS))

    @jax.jit
    def scores(cn_params):
        cn, context = base.prompt.split({"controlnet": cn_params, **base.tower}, tokens)
        plain = models.get_score_fn(sde, base.model, base.variables, continuous=config.training.continuous,
                                    context=context)(x, t)
        controlled_score = models.get_score_fn(sde, controlled, {"params": cn}, continuous=config.training.continuous,
                                               context=context, hint=hint, base=base.variables)(x, t)
        return plain, controlled_score

    plain, fresh = scores(params)
    assert np.all(np.isfinite(plain)) and np.abs(np.asarray(plain)).max() > 0
    np.testing.assert_allclose(fresh, plain, rtol=0, atol=1e-5)
    _, moved = scores(perturbed(params))
    assert np.abs(np.asarray(moved - plain)).max() > 1e-3


def test_the_prompt_context_reaches_both_networks(built):
    config, base, controlled, params = built
    params = perturbed(params, scale=1.0)  # residuals as large as the skips they join
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 8, 8, 1))
    time_cond = sde_lib.from_config(config).noise_label(jnp.array([0.4, 0.8]), config.training.continuous)
    hint = jnp.asarray(np.random.default_rng(4).random((2, 8, 8, 1)) > 0.5, jnp.float32)
    encode = lambda prompts: base.prompt.split(  # noqa: E731
        {"controlnet": None, **base.tower}, jnp.asarray(base.tokenizer(prompts)))[1]
    one, other = encode(PROMPTS), encode(PROMPTS[::-1])

    control = jax.jit(lambda context: controlled.controlnet.apply({"params": params}, x, time_cond, context, hint))

    @jax.jit
    def outputs(net_context, base_context):
        """(Controlled at net_context; the base at base_context under the ControlNet's residuals at net_context)"""
        return (controlled.apply({"params": params}, x, time_cond, hint=hint, base=base.variables,
                                 context=net_context),
                base.model.apply(base.variables, x, time_cond, context=base_context, control=control(net_context)))

    whole, parts = outputs(one, one)
    np.testing.assert_allclose(whole, parts, rtol=0, atol=1e-5)  # both networks see the one context
    _, base_other = outputs(one, other)  # the base sees the context ...
    assert np.abs(np.asarray(base_other - whole)).max() > 1e-3
    # ... and so does the ControlNet: its residuals differ, and so does the base's output under them (the base's
    # decoder damps the change, yet it is ~70x the 1e-5 rounding between `whole` and `parts`)
    assert max(float(jnp.abs(a - b).max()) for a, b in zip(*(jax.tree.leaves(control(c)) for c in (one, other)))) \
        > 1e-2
    _, mixed = outputs(other, one)
    assert np.abs(np.asarray(mixed - whole)).max() > 1e-4


@pytest.mark.slow  # compiles a train step of the base and one of the ControlNet: ~50 s on 2 cores
def test_first_training_loss_is_the_base_loss_with_the_same_prompts(built):
    """One train step of the ControlNet (zero convs at zero) and of the base itself from states of one rng, on one
    batch: the same caption dropout, noise and loss, up to XLA's rounding."""
    config, base, controlled, params = built
    sde, optimizer = sde_lib.from_config(config), get_optimizer(config.optim)
    rng = np.random.default_rng(5)
    batch = {"image": jnp.asarray(rng.random((4, 8, 8, 1)), jnp.float32),
             "tokens": jnp.asarray(base.tokenizer(CAPTIONS[:4])),
             "condition": jnp.asarray(rng.random((4, 8, 8, 1)) > 0.5, jnp.float32)}
    scaler = datasets.get_data_scaler(config)
    cn_step = score.step_fn_from_config(config, sde, controlled, train=True, optimizer=optimizer, scaler=scaler,
                                        conditions=lambda b, frozen: {"hint": b["condition"], "base": frozen["base"]},
                                        prompt=base.prompt)
    base_prompt = dataclasses.replace(base.prompt, network="unet")
    base_step = score.step_fn_from_config(config, sde, base.model, train=True, optimizer=optimizer, scaler=scaler,
                                          prompt=base_prompt)
    state_rng = jax.random.PRNGKey(7)
    _, cn_loss = jax.jit(cn_step)(create_train_state(state_rng, base.controlnet_variables(params), optimizer),
                                  batch, base.frozen)
    _, base_loss = jax.jit(base_step)(create_train_state(state_rng, base_prompt.init(None, base.variables),
                                                         optimizer), batch, base.tower)
    assert np.isfinite(float(base_loss)) and float(base_loss) > 0
    np.testing.assert_allclose(float(cn_loss), float(base_loss), rtol=1e-5)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A text-conditioned base run with its tower trained jointly: a step-2 checkpoint of {'unet', 'text_model'}
    as ScoreTask saves it, its tokenizer.json and the sample grid the image-size check reads."""
    folder = tmp_path_factory.mktemp("text_base")
    config = tiny_config()
    base = random_base(config)
    variables = {"params": {"unet": base.variables["params"], **base.tower}}
    state = create_train_state(jax.random.PRNGKey(0), variables, get_optimizer(config.optim))
    with Checkpointer(str(folder)) as checkpointer:
        checkpointer.save(2, state.replace(step=jnp.asarray(2, jnp.int32)), periodic=True, meta={"frozen": {}})
        checkpointer.wait()
    base.tokenizer.save(str(folder / text.TOKENIZER_FILE))
    os.makedirs(folder / "samples")
    np.savez(folder / "samples" / "step_00000002.npz", image=np.zeros((2, 8, 8, 1), np.uint8))
    return folder


def test_open_base_freezes_and_records_the_text_tower(base_dir):
    base = task_lib.open_base(tiny_config(base_dir), parallel.make_mesh())
    assert set(base.frozen) == {"base", "text_model"} and "conv_in" in base.variables["params"]
    assert base.prompt.network == "controlnet" and not base.prompt.joint
    assert base.record["text"]["text_tower"] == str(base_dir) and base.record["text"]["step"] == 2
    assert set(base.controlnet_variables({"a": 1})["params"]) == {"controlnet"}  # the tower is not trained


def save_controlnet(config, base_dir, workdir, record=None, seed=3):
    """A step-2 ControlNet checkpoint in `workdir` (zero convs perturbed), trained against `record` (the base's)."""
    base = task_lib.open_base(config, parallel.make_mesh())
    _, params = task_lib.build(config, base)
    state = create_train_state(jax.random.PRNGKey(0), base.controlnet_variables(perturbed(params, seed=seed)),
                               get_optimizer(config.optim))
    with Checkpointer(str(workdir)) as checkpointer:
        checkpointer.save(2, state.replace(step=jnp.asarray(2, jnp.int32)), periodic=True,
                          meta={"frozen": base.record if record is None else record})
        checkpointer.wait()
    return base


def test_resume_against_another_text_tower_is_refused_naming_it(base_dir, tmp_path):
    config = tiny_config(base_dir)
    config.training.n_iters = 4
    base = task_lib.open_base(config, parallel.make_mesh())
    other = {**base.record, "text": {**base.record["text"], "digest": "0" * 16}}  # the base's tower retrained
    save_controlnet(config, base_dir, tmp_path / "cn", record=other)
    renamed = r'trained against .*"text": \{"digest": "0{16}", .*"text_tower": '
    with pytest.raises(ConfigError, match=renamed) as refused:
        loop.train(task_lib.ControlNetTask(config, str(tmp_path / "cn")))
    assert "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match="was trained on .*'text_tower'"):
        controlnet_sample.load(config, str(tmp_path / "cn"), parallel.make_mesh())


def test_sampling_with_prompts_writes_the_grid(base_dir, tmp_path):
    config = tiny_config(base_dir)
    save_controlnet(config, base_dir, tmp_path)
    config.sampling.update(prompt="|".join(PROMPTS), input_indices="0", num_samples=1, guidance="cfg",
                           guidance_weight=1.0)
    written = np.load(controlnet_sample.sample(config, str(tmp_path), "eval"))
    assert written["image"].shape == (2, 8, 8, 1) and written["condition"].shape == (1, 8, 8, 1)
    assert list(written["prompt"]) == PROMPTS
    assert os.path.isfile(tmp_path / "eval" / "controlnet_step2_ddim_s1_cfg_w1.png")
    config.text.conditional = False  # prompts on a base without text: refused in one line
    with pytest.raises(ConfigError, match="not text-conditioned"):
        controlnet_sample.sample(config, str(tmp_path), "eval")


@pytest.mark.slow  # compiles a ControlNet train step and a sampler: minutes on 2 cores
def test_training_on_the_text_base_keeps_the_tower_out_of_the_state(base_dir, tmp_path):
    config = tiny_config(base_dir)
    config.training.snapshot_sampling, config.training.snapshot_num_samples = True, 2
    task = task_lib.ControlNetTask(config, str(tmp_path))
    state = loop.train(task)
    assert set(state.params) == {"controlnet"} and "controlnet_cond_embedding" in state.params["controlnet"]
    with Checkpointer(str(tmp_path)) as checkpointer:
        restored = checkpointer.latest(abstract_like(task.init_state, parallel.make_mesh()))
    assert restored.meta["frozen"]["text"]["text_tower"] == str(base_dir)
    captions = (tmp_path / "samples" / "step_00000002.txt").read_text().splitlines()
    assert len(captions) == 2 and all(c.startswith("a ") for c in captions)
    assert os.path.isfile(tmp_path / "samples" / "step_00000002.png")


def test_base_trained_with_another_clip_tower_refused(tmp_path):
    """A base that used a CLIP run's tower (its checkpoints record it) under a config naming another CLIP run."""
    config = tiny_config(tmp_path / "base")
    base = random_base(config)
    records = {}
    for name, seed in (("clip", 5), ("other_clip", 6)):
        folder = tmp_path / name
        folder.mkdir()
        base.tokenizer.save(str(folder / text.TOKENIZER_FILE))
        params = jax.tree.map(lambda p, s=seed: p + s, base.tower["text_model"])
        text.export_tower(str(folder), {"tower": "transformer", "width": 16, "layers": 1, "heads": 2}, params, 7)
        records[name] = text.load_tower(str(folder), base.tokenizer)[2]
    state = create_train_state(jax.random.PRNGKey(0), {"params": {"unet": base.variables["params"]}},
                               get_optimizer(config.optim))
    with Checkpointer(str(tmp_path / "base")) as checkpointer:
        checkpointer.save(2, state.replace(step=jnp.asarray(2, jnp.int32)), periodic=True,
                          meta={"frozen": records["clip"]})
        checkpointer.wait()
    config.text.pretrained_dir = str(tmp_path / "clip")
    assert task_lib.open_base(config, parallel.make_mesh()).record["text"] == records["clip"]
    config.text.pretrained_dir = str(tmp_path / "other_clip")
    with pytest.raises(ConfigError, match=rf"was trained with the text tower .*{tmp_path}/clip'.* but config.text "
                                          rf"gives .*other_clip") as refused:
        task_lib.open_base(config, parallel.make_mesh())
    assert "\n" not in str(refused.value)
