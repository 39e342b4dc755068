"""models.vq: the vector quantiser against closed forms, and VQModel's diffusers folder round trip."""
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import save_file

from models.convert import ConversionError
from models.vq import VectorQuantizer, VQModel, codebook_usage, load_diffusers_vq_model

CODEBOOK = np.array([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0], [-2.0, 5.0]], np.float32)
# nearest codes 0, 1, 2 (|(2,0)-(3,0)|^2 = 1 < |(2,0)-(1,1)|^2 = 2); code 3 unused
Z_E = np.array([[[[0.2, 0.1], [0.9, 1.4], [2.0, 0.0]]]], np.float32)  # (B=1, h=1, w=3, D=2)
BETA = 0.25


def _quantize(z_e, codebook=CODEBOOK):
    vq = VectorQuantizer(len(CODEBOOK), 2, beta=BETA)
    return vq.apply({"params": {"embedding": {"embedding": codebook}}}, z_e)


def test_quantized_output_is_exactly_a_codebook_row():
    z_q, _, stats = _quantize(Z_E)
    np.testing.assert_array_equal(stats["indices"], [[[0, 1, 2]]])
    np.testing.assert_array_equal(z_q, CODEBOOK[[0, 1, 2]][None, None])


def test_loss_is_codebook_plus_beta_commitment_on_a_hand_example():
    _, loss, stats = _quantize(Z_E)
    squared = ((0.2 ** 2 + 0.1 ** 2) + (0.1 ** 2 + 0.4 ** 2) + (1.0 ** 2 + 0.0)) / 6  # mean over B h w D = 6
    assert float(loss) == pytest.approx((1 + BETA) * squared, rel=1e-6)
    assert float(stats["perplexity"]) == pytest.approx(3.0, rel=1e-6)  # three codes used equally
    assert float(stats["usage"]) == pytest.approx(3 / 4)


def test_straight_through_gradient_is_the_identity_for_the_encoder_output():
    w = np.arange(6, dtype=np.float32).reshape(Z_E.shape) - 2.0
    grad = jax.grad(lambda z: jnp.sum(w * _quantize(z)[0]))(jnp.asarray(Z_E))
    np.testing.assert_array_equal(grad, w)


def test_gradients_of_the_loss_split_between_codes_and_encoder():
    """d L / d e_k = 2 sum_{i: k(i)=k} (e_k - z_i) / N (codebook term only); d L / d z_i = 2 beta (z_i - e_k(i)) / N."""
    n = Z_E.size
    g_codes = jax.grad(lambda e: _quantize(Z_E, e)[1])(jnp.asarray(CODEBOOK))
    expected = np.zeros_like(CODEBOOK)
    expected[:3] = 2 * (CODEBOOK[:3] - Z_E[0, 0]) / n
    np.testing.assert_allclose(g_codes, expected, rtol=1e-6, atol=1e-7)
    g_z = jax.grad(lambda z: _quantize(z)[1])(jnp.asarray(Z_E))
    np.testing.assert_allclose(g_z, 2 * BETA * (Z_E - CODEBOOK[[0, 1, 2]]) / n, rtol=1e-6, atol=1e-7)


def test_codebook_usage_extremes():
    perplexity, usage = codebook_usage(jnp.zeros((2, 3), jnp.int32), 8)
    assert float(perplexity) == pytest.approx(1.0) and float(usage) == pytest.approx(1 / 8)
    perplexity, usage = codebook_usage(jnp.arange(8), 8)
    assert float(perplexity) == pytest.approx(8.0, rel=1e-6) and float(usage) == 1.0


TINY = dict(block_out_channels=(8, 8), norm_num_groups=4, latent_channels=3, num_vq_embeddings=5, vq_embed_dim=2)


def _torch_state_dict(params):
    """Our params under diffusers' names and layouts (the inverse of models.convert's rule)."""
    out = {}
    for path, value in traverse_util.flatten_dict(params).items():
        *module, leaf = path
        key = ".".join(re.sub(r"_(\d+)$", r".\1", part) for part in module)
        value = np.asarray(value)
        if leaf == "kernel":
            value = np.transpose(value, (3, 2, 0, 1)) if value.ndim == 4 else value.T
        out[f"{key}.{'bias' if leaf == 'bias' else 'weight'}"] = np.ascontiguousarray(value)
    return out


def test_vq_model_round_trips_through_a_diffusers_folder(tmp_path):
    model = VQModel(**TINY)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 3), minval=-1, maxval=1)
    params = model.init(jax.random.PRNGKey(1), x)["params"]
    assert params["quantize"]["embedding"]["embedding"].shape == (5, 2)
    save_file(_torch_state_dict(params), str(tmp_path / "diffusion_pytorch_model.safetensors"))
    config = dict(_class_name="VQModel", down_block_types=["DownEncoderBlock2D"] * 2,
                  up_block_types=["UpDecoderBlock2D"] * 2, scaling_factor=1.0, **TINY)
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded, loaded_params, scaling_factor = load_diffusers_vq_model(str(tmp_path))
    assert scaling_factor == 1.0
    x_hat, loss, stats = loaded.apply({"params": loaded_params}, x)
    x_ref, loss_ref, _ = model.apply({"params": params}, x)
    np.testing.assert_allclose(x_hat, x_ref, rtol=1e-5, atol=1e-6)
    assert x_hat.shape == x.shape and stats["indices"].shape == (2, 4, 4) and float(loss) == float(loss_ref)
    via_indices = loaded.apply({"params": loaded_params}, stats["indices"], method=loaded.decode_indices)
    np.testing.assert_allclose(via_indices, x_hat, rtol=1e-5, atol=1e-6)
    (tmp_path / "config.json").write_text(json.dumps(dict(config, norm_type="spatial")))
    with pytest.raises(ConversionError, match="norm_type 'spatial' is not supported"):
        load_diffusers_vq_model(str(tmp_path))
