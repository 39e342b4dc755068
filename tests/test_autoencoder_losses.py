"""losses.autoencoder against hand computations and closed forms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from losses import autoencoder as L


def test_l1_sums_per_example_and_averages_over_the_batch():
    x = np.zeros((2, 1, 2, 1), np.float32)
    x_hat = np.array([1.0, -2.0, 0.5, 0.5], np.float32).reshape(x.shape)
    assert float(L.l1_reconstruction(x, x_hat)) == pytest.approx((3.0 + 1.0) / 2)


def test_kl_matches_numerical_integration():
    mean = np.array([[0.3, -1.2], [2.0, 0.0]], np.float32)
    logvar = np.array([[0.5, -1.0], [0.0, 1.5]], np.float32)
    z = np.linspace(-20, 20, 400001)
    total = 0.0
    for mu, lv in zip(mean.ravel(), logvar.ravel()):
        s = np.exp(0.5 * lv)
        log_q = -0.5 * ((z - mu) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
        log_p = -0.5 * z ** 2 - 0.5 * np.log(2 * np.pi)
        total += np.trapezoid(np.exp(log_q) * (log_q - log_p), z)
    assert float(L.kl_to_standard_normal(mean, logvar)) == pytest.approx(total / 2, rel=1e-5)
    assert float(L.kl_to_standard_normal(np.zeros((3, 4)), np.zeros((3, 4)))) == 0.0


def test_hinge_and_generator_losses_by_hand():
    real = np.array([2.0, 0.5, -1.0, 1.0])   # relu(1 - D): 0, 0.5, 2, 0 -> mean 0.625
    fake = np.array([-3.0, 0.0, 1.0, -0.5])  # relu(1 + D): 0, 1, 2, 0.5 -> mean 0.875
    assert float(L.hinge_discriminator_loss(real, fake)) == pytest.approx(0.5 * (0.625 + 0.875))
    assert float(L.generator_loss(fake)) == pytest.approx(0.625)


def test_adaptive_weight_ratio_clip_and_stop_gradient():
    rec, gen = jnp.array([[3.0, 4.0]]), jnp.array([[0.0, 1.0]])  # norms 5 and 1
    assert float(L.adaptive_weight(rec, gen, disc_weight=0.5)) == pytest.approx(0.5 * 5 / (1 + 1e-4))
    assert float(L.adaptive_weight(rec, jnp.zeros((1, 2)))) == pytest.approx(1e4)  # 5 / 1e-4 clipped
    g = jax.grad(lambda r: L.adaptive_weight(r, gen))(rec)
    np.testing.assert_array_equal(g, 0.0)


def test_grad_wrt_last_decoder_layer_only():
    params = {"decoder": {"conv_out": {"kernel": jnp.array([1.0, 2.0]), "bias": jnp.array(3.0)}},
              "encoder": {"w": jnp.array(4.0)}}

    def loss(p):
        return jnp.sum(p["decoder"]["conv_out"]["kernel"] ** 2) * p["encoder"]["w"] + p["decoder"]["conv_out"]["bias"]

    np.testing.assert_allclose(L.grad_wrt_leaf(loss, params), [8.0, 16.0])  # 2 k w


def test_gan_terms_start_at_disc_start():
    steps = jnp.array([0, 9, 10, 11])
    np.testing.assert_array_equal(L.adopt_weight(0.5, steps, disc_start=10), [0.0, 0.0, 0.5, 0.5])


def test_adaptive_weight_on_a_tiny_autoencoder():
    from models.autoencoder import AutoencoderKL
    from models.vq import VQModel

    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 4, 4, 3), minval=-1, maxval=1)
    vq = VQModel(block_out_channels=(4,), norm_num_groups=2, num_vq_embeddings=4)
    vq_params = jax.eval_shape(vq.init, jax.random.PRNGKey(0), x)["params"]
    assert vq_params["decoder"]["conv_out"]["kernel"].shape == (3, 3, 4, 3)
    model = AutoencoderKL(block_out_channels=(4,), norm_num_groups=2, latent_channels=2)
    params = model.init(jax.random.PRNGKey(1), x)["params"]
    fake_logits = lambda x_hat: jnp.mean(x_hat, axis=(1, 2, 3))  # a stand-in discriminator
    rec_loss = lambda p: L.l1_reconstruction(x, model.apply({"params": p}, x)[0])
    gen_loss = lambda p: L.generator_loss(fake_logits(model.apply({"params": p}, x)[0]))
    rec, gen = jax.jit(lambda p: (L.grad_wrt_leaf(rec_loss, p), L.grad_wrt_leaf(gen_loss, p)))(params)
    assert rec.shape == gen.shape == params["decoder"]["conv_out"]["kernel"].shape
    expected = np.linalg.norm(rec) / (np.linalg.norm(gen) + 1e-4)
    assert float(L.adaptive_weight(rec, gen)) == pytest.approx(min(expected, 1e4), rel=1e-5)
