"""models.discriminator: the PatchGAN's layout (the reference's Sequential indices), shapes and arithmetic."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.discriminator import NLayerDiscriminator


def _conv_ref(x, kernel, bias, stride):
    """4x4 cross-correlation with zero padding 1, by loops (NHWC, HWIO)."""
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out_h = (x.shape[1] - 4) // stride + 1
    out_w = (x.shape[2] - 4) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]))
    for i in range(out_h):
        for j in range(out_w):
            patch = x[:, i * stride:i * stride + 4, j * stride:j * stride + 4, :]
            out[:, i, j, :] = np.einsum("bhwc,hwco->bo", patch, kernel)
    return out + (0 if bias is None else bias)


def test_layout_follows_the_reference_sequential():
    d = NLayerDiscriminator(ndf=4, n_layers=3)
    variables = jax.eval_shape(d.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    p = variables["params"]
    assert sorted(p) == ["main_0", "main_11", "main_2", "main_3", "main_5", "main_6", "main_8", "main_9"]
    assert p["main_0"]["kernel"].shape == (4, 4, 3, 4) and "bias" in p["main_0"]
    assert p["main_2"]["kernel"].shape == (4, 4, 4, 8) and "bias" not in p["main_2"]
    assert p["main_8"]["kernel"].shape == (4, 4, 16, 32)
    assert p["main_11"]["kernel"].shape == (4, 4, 32, 1)
    assert set(variables["batch_stats"]) == {"main_3", "main_6", "main_9"}


@pytest.mark.parametrize("n_layers,size", [(1, 8), (2, 16), (3, 24)])
def test_one_logit_per_patch(n_layers, size):
    d = NLayerDiscriminator(ndf=4, n_layers=n_layers, norm="none")
    out = jax.eval_shape(d.init_with_output, jax.random.PRNGKey(0), jnp.zeros((2, size, size, 3)))[0]
    side = size // 2 ** n_layers - 2
    assert out.shape == (2, side, side, 1)


def test_one_layer_discriminator_by_hand():
    d = NLayerDiscriminator(ndf=2, n_layers=1, norm="none")
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
    params = d.init(jax.random.PRNGKey(2), x)["params"]
    params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(3), a.shape), params)
    out = d.apply({"params": params}, x)
    x = np.asarray(x, np.float64)
    leaky = lambda h: np.where(h > 0, h, 0.2 * h)
    h = leaky(_conv_ref(x, params["main_0"]["kernel"], params["main_0"]["bias"], 2))
    h = leaky(_conv_ref(h, params["main_2"]["kernel"], params["main_2"]["bias"], 1))
    h = _conv_ref(h, params["main_4"]["kernel"], params["main_4"]["bias"], 1)
    np.testing.assert_allclose(out, h, rtol=1e-4, atol=1e-5)


def test_batch_norm_uses_batch_statistics_when_training():
    d = NLayerDiscriminator(ndf=2, n_layers=1)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 3))
    variables = d.init(jax.random.PRNGKey(2), x)
    _, updates = d.apply(variables, x, train=True, mutable=["batch_stats"])
    assert not np.allclose(updates["batch_stats"]["main_3"]["mean"], 0.0)
    with pytest.raises(ValueError, match="norm 'instance' is not one of"):
        NLayerDiscriminator(norm="instance").init(jax.random.PRNGKey(0), x)
