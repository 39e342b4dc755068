"""models.autoencoder: diffusers' AutoencoderKL reproduced from its own folder, and clear errors on wrong ones."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from models.autoencoder import AutoencoderKL, DiagonalGaussian, load_diffusers_autoencoder_kl
from models.convert import ConversionError, read_safetensors
from tests.reference_fixtures import fixture_path, load_io, nchw_to_nhwc, relative_error

VAE = ("stable_diffusion", "vae")


@pytest.fixture(scope="module")
def converted():
    return load_diffusers_autoencoder_kl(fixture_path(*VAE))


def test_matches_diffusers_encode_and_decode(converted):
    model, params, scaling_factor = converted
    io = load_io(*VAE, "io.npz")
    mean, logvar = model.apply({"params": params}, nchw_to_nhwc(io["x"]), method=model.encode)
    decoded = model.apply({"params": params}, nchw_to_nhwc(io["z"]), method=model.decode)
    assert relative_error(mean, nchw_to_nhwc(io["latent_mean"])) < 1e-4
    assert relative_error(logvar, nchw_to_nhwc(io["latent_logvar"])) < 1e-4
    assert relative_error(decoded, nchw_to_nhwc(io["decoded"])) < 1e-4
    assert scaling_factor == pytest.approx(0.18215)
    assert model.block_out_channels == (16, 32) and model.latent_channels == 4


def test_training_call_samples_the_posterior(converted):
    model, params, _ = converted
    x = nchw_to_nhwc(load_io(*VAE, "io.npz")["x"])
    recon, q = model.apply({"params": params}, x)
    mean, _ = model.apply({"params": params}, x, method=model.encode)
    np.testing.assert_allclose(q.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(recon, model.apply({"params": params}, mean, method=model.decode), rtol=1e-5)
    rng = jax.random.PRNGKey(3)
    recon_s, q_s = model.apply({"params": params}, x, rng)
    z = q_s.mean + q_s.std * jax.random.normal(rng, q_s.mean.shape)
    np.testing.assert_allclose(recon_s, model.apply({"params": params}, z, method=model.decode), atol=1e-5)
    assert recon_s.shape == x.shape


def test_log_variance_is_clamped():
    moments = jnp.concatenate([jnp.zeros((1, 1, 1, 2)), jnp.array([[[[-100.0, 100.0]]]])], axis=-1)
    q = DiagonalGaussian.from_moments(moments)
    np.testing.assert_array_equal(q.logvar, [[[[-30.0, 20.0]]]])


def test_options_drop_their_layers():
    model = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=2,
                          mid_block_add_attention=False, use_quant_conv=False, use_post_quant_conv=False)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 3)))["params"]
    assert set(params) == {"encoder", "decoder"}
    assert "attentions_0" not in params["encoder"]["mid_block"]
    assert params["encoder"]["conv_out"]["kernel"].shape == (3, 3, 8, 4)


def _copy_folder(tmp_path, edit_config=None, edit_tensors=None):
    folder = tmp_path / "vae"
    shutil.copytree(fixture_path(*VAE), folder)
    os.chmod(folder, 0o755)
    for name in os.listdir(folder):
        os.chmod(folder / name, 0o644)
    if edit_config:
        config = json.loads((folder / "config.json").read_text())
        edit_config(config)
        (folder / "config.json").write_text(json.dumps(config))
    if edit_tensors:
        path = str(folder / "diffusion_pytorch_model.safetensors")
        tensors = read_safetensors(path)
        edit_tensors(tensors)
        save_file(tensors, path)
    return str(folder)


def test_missing_parameter_is_named(tmp_path):
    folder = _copy_folder(tmp_path, edit_tensors=lambda t: t.pop("decoder.conv_out.bias"))
    with pytest.raises(ConversionError, match=r"1 missing: decoder\.conv_out\.bias"):
        load_diffusers_autoencoder_kl(folder)


def test_unexpected_parameters_are_named(tmp_path):
    folder = _copy_folder(tmp_path, edit_config=lambda c: c.update(mid_block_add_attention=False))
    with pytest.raises(ConversionError, match=r"unexpected: .*mid_block\.attentions\.0\.group_norm"):
        load_diffusers_autoencoder_kl(folder)


def test_wrong_folders_are_one_line_errors(tmp_path):
    with pytest.raises(ConversionError, match="is not a folder"):
        load_diffusers_autoencoder_kl(str(tmp_path / "nowhere"))
    with pytest.raises(ConversionError, match="config.json does not exist"):
        load_diffusers_autoencoder_kl(str(tmp_path))
    folder = _copy_folder(tmp_path, edit_config=lambda c: c.update(_class_name="UNet2DConditionModel"))
    with pytest.raises(ConversionError, match="describes a UNet2DConditionModel, not a AutoencoderKL"):
        load_diffusers_autoencoder_kl(folder)
    os.remove(os.path.join(folder, "diffusion_pytorch_model.safetensors"))
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(ConversionError, match="has no weights file"):
        load_diffusers_autoencoder_kl(folder)
    folder2 = _copy_folder(tmp_path / "b", edit_config=lambda c: c.update(up_block_types=["AttnUpDecoderBlock2D"]))
    with pytest.raises(ConversionError, match=r"up_block_types \['AttnUpDecoderBlock2D'\] are not supported"):
        load_diffusers_autoencoder_kl(folder2)
