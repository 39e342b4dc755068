"""Prompts at --mode sample: parsing, one-line refusals, the truncation warning, classifier-free guidance on a
prompt against the empty or a negative prompt in one doubled call, and an end-to-end run on a tiny model."""
import logging

import jax.numpy as jnp
import numpy as np
import pytest

from data_sources.tokenizer import WordTokenizer
from modes import prompts, sample
from samplers.guidance import classifier_free_guidance
from tests.test_text_score import tiny_config
from training import loop
from tasks.score import ScoreTask
from training.validation import ConfigError

TOKENIZER = WordTokenizer.build(["a 3 left of a 7", "a 7 left of a 3"], context_length=8)


def test_prompts_from_the_field_or_a_file_and_refusals(tmp_path):
    config = tiny_config()
    config.sampling.prompt = " a 3 left of a 7 |a 7 left of a 3|"
    assert prompts.read_prompts(config) == ["a 3 left of a 7", "a 7 left of a 3"]
    config.sampling.prompt, config.sampling.prompt_file = "", str(tmp_path / "p.txt")
    (tmp_path / "p.txt").write_text("a 3 left of a 7\n\n a 7 left of a 3\n")
    assert prompts.read_prompts(config) == ["a 3 left of a 7", "a 7 left of a 3"]
    config.sampling.prompt_file = ""
    with pytest.raises(ConfigError, match="set config.sampling.prompt"):
        prompts.read_prompts(config)
    config.text.conditional, config.sampling.prompt = False, "a 3 left of a 7"
    with pytest.raises(ConfigError, match="not text-conditioned"):
        prompts.read_prompts(config)


def test_unknown_words_are_refused_and_long_prompts_truncated_with_a_warning(caplog):
    with pytest.raises(ConfigError, match="The word 'cat' of the prompt 'a cat left of a 7' is not in"):
        prompts.encode_prompts(TOKENIZER, ["a cat left of a 7"])
    with caplog.at_level(logging.WARNING):
        ids = prompts.encode_prompts(TOKENIZER, ["a 3 left of a 7 left of a 3"])
    assert ids.shape == (1, 8) and "only the first 8 are kept" in caplog.text


def test_guidance_on_a_prompt_is_one_doubled_call_against_the_negative_prompt():
    ids = jnp.asarray(TOKENIZER(["a 3 left of a 7", "a 7 left of a 3"]))
    negative = jnp.asarray(TOKENIZER("a 7 left of a 3")[0])
    calls = []

    def score_fn_for(tokens):  # the score "of" a prompt: its token sum times x
        calls.append(tokens.shape)
        return lambda x, t: x * jnp.sum(tokens, axis=1)[:, None]

    x, t, w = jnp.ones((2, 3)), jnp.zeros(2), 3.0
    guided = classifier_free_guidance(score_fn_for, ids, negative, w)(x, t)
    assert calls == [(4, 8)]
    expected = (1 + w) * x * ids.sum(1)[:, None] - w * x * negative.sum()
    np.testing.assert_allclose(guided, expected)


def test_sample_prompts_end_to_end(tmp_path):
    config = tiny_config()
    config.training.snapshot_sampling = False
    loop.train(ScoreTask(config, str(tmp_path)))
    s = config.sampling
    s.prompt, s.num_samples, s.guidance, s.guidance_weight = "a 3 left of a 7|a 7 left of a 3", 2, "cfg", 1.0
    s.negative_prompt = "a 1 left of a 1"
    path = sample.sample(config, str(tmp_path), "eval")
    out = np.load(path)
    assert out["image"].shape == (4, 8, 8, 1) and list(out["prompt"][::2]) == ["a 3 left of a 7", "a 7 left of a 3"]
    assert str(out["negative_prompt"]) == "a 1 left of a 1" and path.endswith("prompt_step2_ddim_cfg_w1.npz")
    assert (tmp_path / "eval" / "prompt_step2_ddim_cfg_w1.png").is_file()
