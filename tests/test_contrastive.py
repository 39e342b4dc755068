"""CLIP's contrastive loss and retrieval accuracy in closed form, and the contrastive pair's towers."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from losses import contrastive
from models import clip, clip_text
from tests.reference_fixtures import fixture_path


def test_loss_of_orthogonal_pairs_is_log_of_one_plus_off_diagonal_mass():
    """One-hot pairs (u_i = v_i = e_i, scaled): l_ii = t, l_ij = 0, so L = log(1 + (B - 1) e^{-t})."""
    b = 5
    image, text = 3.0 * jnp.eye(b, 8), 0.5 * jnp.eye(b, 8)
    for t in (1.0, 2.0, 30.0):
        loss = contrastive.contrastive_loss(image, text, jnp.log(t))
        np.testing.assert_allclose(loss, math.log1p((b - 1) * math.exp(-t)), rtol=1e-5, atol=1e-7)
    # Large learned scales are clamped at 100: the loss of s = 10 is that of s = log 100, and -> 0.
    clamped = contrastive.contrastive_loss(image, text, jnp.float32(10.0))
    np.testing.assert_allclose(clamped, contrastive.contrastive_loss(image, text, jnp.log(100.0)), rtol=1e-6)
    assert clamped < 1e-7


def test_uniform_logits_give_log_b_and_the_loss_is_symmetric():
    b = 7
    same = jnp.ones((b, 4))
    np.testing.assert_allclose(contrastive.contrastive_loss(same, same, jnp.log(50.0)), math.log(b), rtol=1e-6)
    rng = np.random.default_rng(0)
    f, g = jnp.asarray(rng.normal(size=(b, 4))), jnp.asarray(rng.normal(size=(b, 4)))
    np.testing.assert_allclose(contrastive.contrastive_loss(f, g, 1.0), contrastive.contrastive_loss(g, f, 1.0),
                               rtol=1e-6)
    # The scale's gradient is zero only where it is clamped.
    grad = jax.grad(lambda s: contrastive.contrastive_loss(f, g, s))
    assert grad(1.0) != 0 and grad(5.0) == 0


def test_retrieval_accuracy():
    image = jnp.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])
    text = jnp.array([[1.0, 0.1, 0], [0, 1, 0], [0.9, 0, 0.1], [0, 0.1, 1]])
    # image -> text: 0->0 ok, 1->1 ok, 2->3 wrong, 3->3 ok;  text -> image: 0->0, 1->1, 2->0 wrong, 3->2 wrong
    i2t, t2i = contrastive.retrieval_accuracy(image, text)
    assert (float(i2t), float(t2i)) == (0.75, 0.5)
    # Images 2 and 3 share a caption class: retrieving either one's text counts.
    i2t, t2i = contrastive.retrieval_accuracy(image, text, groups=jnp.array([0, 1, 2, 2]))
    assert (float(i2t), float(t2i)) == (1.0, 0.75)


def _pair(tower):
    config = clip_text.CLIPTextConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=8, bos_token_id=1,
                                      eos_token_id=2, pad_token_id=0)
    model = clip.CLIPPair(config, projection_dim=8, text_tower=tower, image_features=(4, 8))
    ids = jnp.array([[1, 4, 5, 6, 4, 7, 2, 0], [1, 4, 7, 6, 4, 5, 2, 0]])  # "a 3 left of a 7" / "a 7 left of a 3"
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 1)), ids)["params"]
    return model, params, ids


def test_pair_towers_shapes_and_order_sensitivity():
    model, params, ids = _pair("transformer")
    f, g, s = model.apply({"params": params}, jnp.zeros((2, 8, 8, 1)), ids)
    assert f.shape == g.shape == (2, 8) and float(s) == pytest.approx(math.log(1 / 0.07))
    assert np.abs(g[0] - g[1]).max() > 1e-4  # word order changes the transformer's embedding
    bow_model, bow_params, _ = _pair("bag_of_words")
    bow = bow_model.apply({"params": bow_params}, ids, method=clip.CLIPPair.encode_text)
    np.testing.assert_allclose(bow[0], bow[1], rtol=1e-6)  # ... but not the bag of words'
    np.testing.assert_array_equal(params["text_model"]["embeddings"]["token_embedding"]["embedding"].shape,
                                  bow_params["text_model"]["embeddings"]["token_embedding"]["embedding"].shape)


def test_pretrained_text_tower_fits_the_pair():
    """A transformers text tower's parameters drop into params['text_model'] unchanged."""
    text, text_params = clip_text.from_pretrained(fixture_path("stable_diffusion", "text_encoder"))
    model = clip.CLIPPair(text.config, projection_dim=8, image_features=(4, 8))
    ids = jnp.full((1, 77), 999).at[0, 0].set(998)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), ids)["params"]
    assert jax.tree.map(lambda x: x.shape, shapes["text_model"]) == jax.tree.map(jnp.shape, text_params)
