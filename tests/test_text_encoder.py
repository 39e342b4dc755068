"""The CLIP text transformer against transformers' CLIPTextModel (random weights, fixture), and its rules."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from models import clip_text
from models.convert import ConversionError, read_safetensors
from tests.reference_fixtures import fixture_path, load_io, relative_error


def test_matches_transformers_clip_text_model():
    module, params = clip_text.from_pretrained(fixture_path("stable_diffusion", "text_encoder"))
    io = load_io("stable_diffusion", "text_encoder", "io.npz")
    out = jax.jit(module.apply)({"params": params}, jnp.asarray(io["input_ids"], jnp.int32))
    hidden_err = relative_error(out.last_hidden_state, io["last_hidden_state"])
    pooled_err = relative_error(out.pooler_output, io["pooler_output"])
    print(f"last_hidden_state rel err {hidden_err:.2e}, pooler_output rel err {pooled_err:.2e}")
    assert hidden_err < 1e-4 and pooled_err < 1e-4


def test_reads_prefixed_keys_and_ignores_position_ids(tmp_path):
    """Folders saved by transformers 4.x name keys 'text_model.…' and may hold the position_ids buffer."""
    source = fixture_path("stable_diffusion", "text_encoder")
    tensors = {f"text_model.{k}": v for k, v in read_safetensors(os.path.join(source, "model.safetensors")).items()}
    tensors["text_model.embeddings.position_ids"] = np.arange(77)[None].astype(np.int64)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    shutil.copy(os.path.join(source, "config.json"), tmp_path / "config.json")
    _, params = clip_text.from_pretrained(str(tmp_path))
    np.testing.assert_array_equal(params["final_layer_norm"]["scale"], tensors["text_model.final_layer_norm.weight"])


def test_one_line_errors(tmp_path):
    with pytest.raises(ConversionError, match="does not exist"):
        clip_text.from_pretrained(str(tmp_path / "nowhere"))
    with pytest.raises(ConversionError, match="config.json"):
        clip_text.from_pretrained(str(tmp_path))
    config = json.load(open(fixture_path("stable_diffusion", "text_encoder", "config.json")))
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(ConversionError, match="model.safetensors does not exist"):
        clip_text.from_pretrained(str(tmp_path))
    shutil.copy(fixture_path("stable_diffusion", "text_encoder", "model.safetensors"), tmp_path)
    with pytest.raises(ConversionError, match=r"1\d missing: encoder.layers_2") as err:
        clip_text.from_pretrained(str(tmp_path))
    assert "\n" not in str(err.value)
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "swish"}))
    with pytest.raises(ConversionError, match="hidden_act 'swish' is not supported"):
        clip_text.from_pretrained(str(tmp_path))


def test_eos_position_rule():
    """First eos when pad == eos; argmax for CLIP-vocabulary ids (transformers' legacy rule)."""
    ids = jnp.array([[5, 7, 9, 9, 9], [5, 9, 9, 9, 9]])
    np.testing.assert_array_equal(clip_text.eos_positions(ids, 9), [2, 1])
    legacy = jnp.array([[49406, 320, 49407, 0, 0], [49406, 49407, 0, 0, 0]])  # SD 2.x pads with id 0
    np.testing.assert_array_equal(clip_text.eos_positions(legacy, 2), [2, 1])


def _tiny(**overrides):
    return clip_text.CLIPTextConfig(**{**dict(vocab_size=20, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                                              num_attention_heads=2, max_position_embeddings=6, bos_token_id=1,
                                              eos_token_id=2, pad_token_id=0), **overrides})


def test_attention_is_causal_and_order_matters():
    """A token never changes the states before it; swapping two words changes the pooled output."""
    module = clip_text.CLIPTextTransformer(_tiny(hidden_act="gelu"))
    ids = jnp.array([[1, 5, 6, 7, 2, 0]])
    params = module.init(jax.random.PRNGKey(0), ids)["params"]
    later_changed = module.apply({"params": params}, ids.at[0, 3].set(9)).last_hidden_state
    base = module.apply({"params": params}, ids)
    np.testing.assert_allclose(later_changed[0, :3], base.last_hidden_state[0, :3], atol=1e-6)
    assert not np.allclose(later_changed[0, 3:], base.last_hidden_state[0, 3:])
    swapped = module.apply({"params": params}, jnp.array([[1, 6, 5, 7, 2, 0]])).pooler_output
    assert np.abs(swapped - base.pooler_output).max() > 1e-3


def test_bag_of_words_is_order_blind_mean():
    module = clip_text.BagOfWordsText(_tiny())
    ids = jnp.array([[1, 5, 6, 7, 2, 0], [1, 7, 6, 5, 2, 0]])
    params = module.init(jax.random.PRNGKey(0), ids)["params"]
    assert set(params["embeddings"]) == {"token_embedding"}
    pooled = module.apply({"params": params}, ids).pooler_output
    table = params["embeddings"]["token_embedding"]["embedding"]
    np.testing.assert_allclose(pooled[0], table[jnp.array([1, 5, 6, 7, 2])].mean(0), rtol=1e-6)
    np.testing.assert_allclose(pooled[0], pooled[1], rtol=1e-6)
