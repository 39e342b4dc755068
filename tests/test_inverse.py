"""Inpainting, colorization and super-resolution with the PC sampler (samplers/inverse.py) on targets with known answers.

The replacement method on a Gaussian. x = (u, o) ~ N(0, [[1, RHO], [RHO, 1]]) with o = Y observed: the exact
conditional is u | o = Y ~ N(RHO Y, 1 - RHO^2) = N(0.8, 0.36). Without a corrector, the unknown coordinate
follows the reverse SDE driven by the score of p_t(u | o = alpha(t) Y) (the observation's fresh noise averages
out as the steps shrink), a linear score -(u - alpha^3 RHO Y) / (1 - alpha^4 RHO^2) under VP, whose moments
solve dm/dt = (f + g^2 / v) m - g^2 m_t / v, dV/dt = 2 (f + g^2 / v) V - g^2: (m, V) = (0.500, 0.494), far
from the conditional. The Langevin corrector at each t mixes towards p_t(u | o), which at small t is the
conditional, and repairs most of it. Measured (20,000 samples, 1000 steps):

    predictor only (euler_maruyama / reverse_diffusion / ancestral)   m 0.490-0.497   V 0.488-0.498
    reverse_diffusion + langevin (snr 0.16)                            m 0.796         V 0.377
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import samplers
import sde_lib
from samplers.analytic import GaussianMixture
from configs import ConfigError
from data_sources.conditions import area_downsample
from samplers.inverse import LinearObservation, colorization, gray_basis, grayscale, inpainting, superresolution

VP = sde_lib.VPSDE()
RHO, Y = 0.8, 1.0


def _sample(sde, shape, score_fn, constraint, seed=0, **options):
    sampler = samplers.get_sampler("pc", sde, shape, constraint=constraint, **options)
    return np.asarray(jax.jit(lambda rng: sampler(rng, score_fn)[0])(jax.random.PRNGKey(seed)))


def _two_images(shape, first, second, var=0.01):
    """A two-component mixture of images of `shape` with per-pixel means first / second (broadcast)."""
    means = np.stack([np.broadcast_to(first, shape).ravel(), np.broadcast_to(second, shape).ravel()])
    dim = means.shape[1]
    return GaussianMixture(np.array([0.5, 0.5]), means, np.stack([var * np.eye(dim)] * 2))


@pytest.mark.parametrize("sde", [VP, sde_lib.VESDE(sigma_max=5.0)], ids=["vp", "ve"])
def test_inpainting_keeps_the_known_pixels_and_completes_the_right_image(sde):
    """Image A is bright on the left, B on the right; knowing the left half of A-samples, every completion's
    right half is A's (dark), and the left half is the input, bit for bit (also under VE, where sigma(0) > 0)."""
    n, shape = 64, (4, 4, 1)
    left = np.zeros(shape)
    left[:, :2] = 1.0
    gm = _two_images(shape, 2 * left - 1, 1 - 2 * left)
    truth, component = gm.sample(jax.random.PRNGKey(1), n)
    truth = np.asarray(truth).reshape(n, *shape)
    known = np.where(left > 0, truth, np.nan)  # the unknown pixels are never read
    x = _sample(sde, (n, *shape), gm.score_fn(sde), inpainting(known, left[..., 0]))
    np.testing.assert_array_equal(x[:, :, :2], truth[:, :, :2])
    assigned = np.argmax(np.asarray(gm.responsibilities(x.reshape(n, -1), jnp.ones(n), jnp.zeros(n))), -1)
    assert np.mean(assigned == np.asarray(component)) > 0.99
    assert np.all(np.abs(x[:, :, 2:] - np.where(np.asarray(component)[:, None, None, None] == 0, -1, 1)) < 0.6)


def _replacement_limit():
    """(m, V) of u at t = 0 under the predictor-only replacement method (module docstring)."""
    def rhs(t, z):
        alpha, beta = np.exp(float(VP.log_alpha(t))), float(VP.beta(t))
        v, m_t = 1 - alpha**4 * RHO**2, alpha**3 * RHO * Y
        rate = -0.5 * beta + beta / v
        return [rate * z[0] - beta * m_t / v, 2 * rate * z[1] - beta]

    return solve_ivp(rhs, (VP.T, 0.0), [0.0, 1.0], rtol=1e-10, atol=1e-12).y[:, -1]


@pytest.mark.parametrize("corrector,expected,bias", [
    ("none", None, (0.01, 0.01)),
    ("langevin", (RHO * Y, 1 - RHO**2), (0.02, 0.04)),
], ids=["predictor_only", "with_langevin"])
def test_inpainting_fills_a_gaussian_as_the_replacement_method_predicts(corrector, expected, bias):
    n = 4000
    gm = GaussianMixture(np.ones(1), np.zeros((1, 2)), np.array([[[1.0, RHO], [RHO, 1.0]]]))
    known = np.stack([np.full(n, np.nan), np.full(n, Y)], axis=1)
    x = _sample(VP, (n, 2), gm.score_fn(VP), inpainting(known, np.array([0.0, 1.0])), corrector=corrector,
                predictor="euler_maruyama", denoise=False)
    assert np.all(x[:, 1] == Y)
    m, v = _replacement_limit() if expected is None else expected
    u = x[:, 0].astype(np.float64)
    assert abs(u.mean() - m) < 5 * np.sqrt(v / n) + bias[0], f"mean {u.mean():.4f}, expected {m:.4f}"
    assert abs(u.var() - v) < 5 * v * np.sqrt(2 / n) + bias[1], f"variance {u.var():.4f}, expected {v:.4f}"


def test_colorization_keeps_the_gray_level_and_recovers_the_colours():
    """Bright red images (gray 0.37) and dark blue ones (gray -0.63): coloured gray levels come out in the
    colours of their own images, with a channel mean equal to the input's to float precision.

    (The gray levels must tell the classes apart more than the colours do: with red and blue of nearly one
    gray level, the replacement method picks the colour at random, as the mode is chosen at large t where
    the noised gray level says little, and Langevin steps at small t cannot cross between the modes.)"""
    n, shape = 64, (2, 2, 3)
    red, blue = np.array([0.9, 0.1, 0.1]), np.array([-0.9, -0.9, -0.1])
    gm = _two_images(shape, red, blue)
    truth, component = gm.sample(jax.random.PRNGKey(3), n)
    truth = np.asarray(truth).reshape(n, *shape)
    gray = np.asarray(grayscale(truth))
    x = _sample(VP, (n, *shape), gm.score_fn(VP), colorization(gray, 3))
    np.testing.assert_allclose(np.asarray(grayscale(x)), gray, atol=2e-6)
    colours = np.where(np.asarray(component)[:, None, None, None] == 0, red, blue)
    assert np.mean(np.all(np.abs(x - colours) < 0.5, axis=(1, 2, 3))) > 0.99  # 5 std; the gray itself is 0.53 off


def test_superresolution_keeps_the_block_means_and_recovers_the_fine_pattern():
    """Image A has each 2x2 block's diagonal bright (block mean 0.5), B its anti-diagonal dark (mean -0.5), with
    channel 1 the negative of channel 0: knowing only the block means of A- or B-samples, every sample carries
    the pattern of its own image inside the blocks, and its block means are the input's to float precision."""
    n, shape, k = 64, (4, 4, 2), 2
    diagonal = np.tile(np.eye(k), (2, 2))[..., None] * np.array([1.0, -1.0])
    gm = _two_images(shape, diagonal, -diagonal[:, ::-1])
    truth, component = gm.sample(jax.random.PRNGKey(5), n)
    truth = np.asarray(truth).reshape(n, *shape)
    x = _sample(VP, (n, *shape), gm.score_fn(VP), superresolution(truth, k))
    np.testing.assert_allclose(np.asarray(area_downsample(x, k)), np.asarray(area_downsample(truth, k)), atol=2e-6)
    assigned = np.argmax(np.asarray(gm.responsibilities(x.reshape(n, -1), jnp.ones(n), jnp.zeros(n))), -1)
    assert np.mean(assigned == np.asarray(component)) > 0.99
    means = np.where(np.asarray(component)[:, None, None, None] == 0, diagonal, -diagonal[:, ::-1])
    assert np.all(np.abs(x - means) < 0.6)


def test_superresolution_basis_is_orthogonal_and_reads_the_block_means():
    obs = superresolution(np.zeros((1, 8, 8, 3)), 4)
    np.testing.assert_allclose(obs.matrix @ obs.matrix.T, np.eye(48), atol=1e-12)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3))
    u = np.asarray(obs.forward(jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(u[..., :3], 4 * area_downsample(x, 4), atol=1e-5)
    np.testing.assert_allclose(np.asarray(obs.inverse(obs.forward(jnp.asarray(x, jnp.float32)))), x, atol=1e-5)


def test_gray_basis_is_orthogonal_with_the_gray_projection_first():
    for c in (2, 3, 4):
        m = gray_basis(c)
        np.testing.assert_allclose(m @ m.T, np.eye(c), atol=1e-12)
        np.testing.assert_allclose(m[0], np.full(c, 1 / np.sqrt(c)), atol=1e-12)


def test_bad_observations_are_named():
    with pytest.raises(ValueError, match=r"mask of shape \(3, 3, 1\) does not broadcast"):
        inpainting(np.zeros((2, 4, 4, 1)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="orthogonal 3x3"):
        LinearObservation(np.zeros((2, 4, 4, 3)), np.ones(3), np.ones((3, 3)))
    with pytest.raises(ConfigError, match="factor of 3 .* divides the image size 8x8"):
        superresolution(np.zeros((2, 8, 8, 1)), 3)
    with pytest.raises(ValueError, match="more than one channel"):
        colorization(np.zeros((2, 4, 4, 1)), 1)
    with pytest.raises(ValueError, match=r"observed images have shape \(2, 4, 4, 1\).*\(3, 4, 4, 1\)"):
        samplers.get_sampler("pc", VP, (3, 4, 4, 1), constraint=inpainting(np.zeros((2, 4, 4, 1)), np.ones((4, 4))))
    from configs.vp import ddpm_digits

    config = ddpm_digits.get_config()
    config.sampling.method = "ddim"
    with pytest.raises(ValueError, match="run on the PC sampler"):
        samplers.from_config(config, VP, (2, 8, 8, 1), constraint=inpainting(np.zeros((2, 8, 8, 1)), np.ones((8, 8))))
