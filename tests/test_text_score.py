"""The text-conditioned score model: a prompt's context from a text tower trained jointly (its params in the
train state, trained) or frozen from a CLIP run's export (beside the state, recorded in each checkpoint, not
trained); caption dropout to the empty prompt; refusals in one line."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.text import unet_mnist_pairs
from data_sources.tokenizer import WordTokenizer
from losses import drop_labels
from models.clip import TEXT_TOWERS
from tasks import text
from tasks.score import ScoreTask
from training import loop
from training import parallel
from training.checkpoint import Checkpointer, abstract_like
from training.validation import ConfigError


def tiny_config(n_iters=2, **text_fields):
    config = unet_mnist_pairs.get_config()
    config.data.image_size, config.data.num_pairs = 8, 32
    t = config.training
    t.batch_size, t.n_iters, t.log_freq, t.eval_freq = 4, n_iters, 2, 0
    t.snapshot_freq, t.snapshot_freq_for_preemption, t.snapshot_num_samples = n_iters, 2, 2
    m = config.model
    m.nf, m.ch_mult, m.attn_resolutions, m.num_heads, m.norm_num_groups, m.cross_attention_dim = \
        8, (1,), (8,), 2, 4, 16  # one level: compiling is most of these tests' time
    config.sampling.num_steps = 2
    config.text.update(width=16, layers=1, heads=2, **text_fields)
    return config


def test_caption_dropout_replaces_whole_prompts_by_the_empty_one():
    tokens = jnp.arange(24, dtype=jnp.int32).reshape(6, 4)
    empty = jnp.array([1, 2, 0, 0], jnp.int32)
    np.testing.assert_array_equal(drop_labels(jax.random.PRNGKey(0), tokens, empty, 0.0), tokens)
    np.testing.assert_array_equal(drop_labels(jax.random.PRNGKey(0), tokens, empty, 1.0), jnp.tile(empty, (6, 1)))
    half = np.asarray(drop_labels(jax.random.PRNGKey(3), tokens, empty, 0.5))
    kept = np.all(half == np.asarray(tokens), axis=1)
    assert np.all(kept | np.all(half == np.asarray(empty), axis=1)) and 0 < kept.sum() < 6


def test_joint_tower_is_trained_with_the_unet(tmp_path):
    config = tiny_config()
    config.training.snapshot_sampling = False  # sampling prompts: tests/test_prompt_sampling.py
    task = ScoreTask(config, str(tmp_path / "joint"))
    start = task.init_state()
    state = loop.train(task)
    assert set(state.params) == {"unet", "text_model"} and task.frozen is None
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), start.params["text_model"],
                                   jax.device_get(state.params["text_model"]))
    assert max(jax.tree_util.tree_leaves(moved)) > 0


def test_frozen_tower_from_a_clip_export_is_used_not_trained(tmp_path):
    clip_dir = tmp_path / "clip"
    clip_dir.mkdir()
    config = tiny_config(pretrained_dir=str(clip_dir), tower="bag_of_words")
    config.training.snapshot_sampling = False
    tokenizer = WordTokenizer.build(["a 3 left of a 7"] + [f"a {d} left of a {d}" for d in range(10)], 8)
    tokenizer.save(str(clip_dir / text.TOKENIZER_FILE))
    fields = {"tower": "transformer", "width": 16, "layers": 1, "heads": 2}
    tower = TEXT_TOWERS["transformer"](text.text_config(fields, tokenizer))
    params = tower.init(jax.random.PRNGKey(5), jnp.asarray(tokenizer([""])))["params"]
    text.export_tower(str(clip_dir), fields, params, step=7)
    task = ScoreTask(config, str(tmp_path / "frozen"))
    assert task.prompt.encoder.__class__.__name__ == "CLIPTextTransformer"  # the export's tower, not config's
    state = loop.train(task)
    assert set(state.params) == {"unet"}
    with Checkpointer(task.workdir) as checkpointer:
        restored = checkpointer.latest(abstract_like(task.init_state, parallel.make_mesh()))
    assert restored.meta["frozen"]["step"] == 7 and restored.meta["frozen"]["text_tower"] == str(clip_dir)
    # the context the U-Net sees is the export's: the same prompt gives the same states as the tower itself
    ids = jnp.asarray(tokenizer(["a 3 left of a 7"]))
    _, context = task.prompt.split({"unet": None, **task.frozen}, ids)
    np.testing.assert_allclose(context, tower.apply({"params": params}, ids).last_hidden_state, rtol=1e-6)


def test_refusals(tmp_path):
    config = tiny_config()
    config.model.cross_attention_dim = 32
    with pytest.raises(ConfigError, match="cross_attention_dim=32 must equal the text tower's width 16"):
        ScoreTask(config, str(tmp_path / "a"))
    config = tiny_config(pretrained_dir=str(tmp_path))
    (tmp_path / text.TOKENIZER_FILE).write_text("{}")
    with pytest.raises(Exception, match="not a word-level vocabulary"):
        ScoreTask(config, str(tmp_path / "b"))
    config = tiny_config()
    config.data.dataset = "mnist"
    with pytest.raises(ConfigError, match="needs captioned images"):
        ScoreTask(config, str(tmp_path / "c"))
