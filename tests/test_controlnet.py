"""ControlNet against diffusers' outputs on the random-weight fixture, and the zero-convolution property."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import controlnet, unet2d_condition
from reference_fixtures import fixture_path, load_io, nchw_to_nhwc, relative_error


@pytest.fixture(scope="module")
def base():
    """The fixture U-Net (the ControlNet fixture's base), its jitted apply and the ControlNet fixture's inputs."""
    unet, params = unet2d_condition.from_diffusers(fixture_path("stable_diffusion", "unet"))
    io = load_io("stable_diffusion", "controlnet", "io.npz")
    inputs = (nchw_to_nhwc(io["sample"]), io["timesteps"], io["encoder_hidden_states"])
    return unet, params, jax.jit(unet.apply), inputs, io


def test_matches_diffusers(base):
    unet, unet_params, unet_apply, inputs, io = base
    model, params = controlnet.from_diffusers(fixture_path("stable_diffusion", "controlnet"))
    cond = nchw_to_nhwc(io["controlnet_cond"])
    down, mid = jax.jit(model.apply)({"params": params}, *inputs, cond, float(io["conditioning_scale"]))
    errors = [relative_error(r, nchw_to_nhwc(io[f"down_block_res_sample_{i}"])) for i, r in enumerate(down)]
    errors.append(relative_error(mid, nchw_to_nhwc(io["mid_block_res_sample"])))
    out = unet_apply({"params": unet_params}, *inputs, (down, mid))
    errors.append(relative_error(out, nchw_to_nhwc(io["controlled_unet_out"])))
    print("residuals, mid, controlled output: relative errors", " ".join(f"{e:.1e}" for e in errors))
    assert len(down) == sum(k.startswith("down_block_res_sample_") for k in io) and max(errors) < 1e-4


def test_fresh_controlnet_leaves_unet_unchanged(base):
    unet, unet_params, unet_apply, inputs, io = base
    model, params = controlnet.from_unet(unet.spec, unet_params, jax.random.PRNGKey(0),
                                         conditioning_embedding_out_channels=(8, 16))
    cond = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16, 3))
    control_apply = jax.jit(model.apply)
    plain = np.asarray(unet_apply({"params": unet_params}, *inputs))
    controlled = np.asarray(unet_apply({"params": unet_params}, *inputs, control_apply({"params": params}, *inputs, cond)))
    np.testing.assert_array_equal(controlled, plain)
    params["controlnet_down_blocks_3"]["kernel"] = 0.1 * jnp.ones_like(params["controlnet_down_blocks_3"]["kernel"])
    params["controlnet_mid_block"]["bias"] = 0.1 * jnp.ones_like(params["controlnet_mid_block"]["bias"])
    controlled = np.asarray(unet_apply({"params": unet_params}, *inputs, control_apply({"params": params}, *inputs, cond)))
    assert relative_error(controlled, plain) > 1e-3


def test_scales_guess_mode_and_sums():
    down = [jnp.ones((1, 2, 2, 3)) for _ in range(4)]
    mid = jnp.ones((1, 1, 1, 3))
    d, m = controlnet.scale_residuals(down, mid, 0.5, guess_mode=True)
    expect = 0.5 * 10.0 ** np.linspace(-1.0, 0.0, 5)
    np.testing.assert_allclose([float(r[0, 0, 0, 0]) for r in d] + [float(m[0, 0, 0, 0])], expect, rtol=1e-6)
    per_output = np.arange(1.0, 6.0)
    d, m = controlnet.scale_residuals(down, mid, per_output)
    np.testing.assert_allclose([float(r.max()) for r in d] + [float(m.max())], per_output)
    d, m = controlnet.sum_controls([(down, mid), controlnet.scale_residuals(down, mid, 2.0)])
    assert all(float(r.min()) == 3.0 for r in d) and float(m.min()) == 3.0
