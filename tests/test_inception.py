"""FID Inception-v3: the torch-convention bilinear resize, output shapes, and closed-form
checks of one full forward pass (BatchNorm with running statistics, eps = 1e-3, the
Mixed_7c branch order, the fc layer)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from evaluation import inception


def _align_corners_false_reference(x, out_h, out_w):
    """Per output pixel, the formula of torch F.interpolate(mode='bilinear',
    align_corners=False) in float64: source coordinate s = (o + 0.5) * in / out - 0.5,
    clamped below at 0; neighbours floor(s) and min(floor(s) + 1, in - 1); linear weights."""
    _, in_h, in_w, _ = x.shape

    def taps(o, in_size, out_size):
        s = max((o + 0.5) * in_size / out_size - 0.5, 0.0)
        i0 = min(int(math.floor(s)), in_size - 1)
        return i0, min(i0 + 1, in_size - 1), s - i0

    out = np.zeros((x.shape[0], out_h, out_w, x.shape[3]))
    for i in range(out_h):
        h0, h1, lh = taps(i, in_h, out_h)
        for j in range(out_w):
            w0, w1, lw = taps(j, in_w, out_w)
            out[:, i, j] = ((1 - lh) * ((1 - lw) * x[:, h0, w0] + lw * x[:, h0, w1])
                            + lh * ((1 - lw) * x[:, h1, w0] + lw * x[:, h1, w1]))
    return out


@pytest.mark.parametrize('in_hw,out_hw', [
    ((32, 32), (299, 299)),   # CIFAR-10 upsampled, the common case
    ((8, 13), (17, 9)),       # up in H, down in W
    ((64, 48), (29, 31)),     # downsampling
    ((5, 7), (5, 7)),         # identity
])
def test_resize_matches_align_corners_false_formula(in_hw, out_hw):
    x = np.random.default_rng(0).random((2, *in_hw, 3), dtype=np.float32)
    got = np.asarray(inception.resize_bilinear(jnp.asarray(x), *out_hw))
    ref = _align_corners_false_reference(x.astype(np.float64), *out_hw)
    assert got.shape == ref.shape
    # float32 source coordinates (as in torch's kernel) vs float64 here: ~1e-6 apart.
    np.testing.assert_allclose(got, ref, atol=5e-6, rtol=0)


def test_resize_is_not_antialiased():
    """Downsampling must not low-pass filter (torch's default); jax.image.resize does
    unless told not to, so it serves as a second reference here."""
    x = np.random.default_rng(1).random((1, 64, 48, 3), dtype=np.float32)
    got = np.asarray(inception.resize_bilinear(jnp.asarray(x), 29, 31))
    plain = np.asarray(jax.image.resize(x, (1, 29, 31, 3), 'bilinear', antialias=False))
    smooth = np.asarray(jax.image.resize(x, (1, 29, 31, 3), 'bilinear', antialias=True))
    np.testing.assert_allclose(got, plain, atol=1e-6)
    assert np.abs(got - smooth).max() > 0.1


def test_resize_to_same_size_is_exact():
    x = np.random.default_rng(2).random((1, 299, 299, 3), dtype=np.float32)
    same = inception.resize_bilinear(jnp.asarray(x), 299, 299)
    np.testing.assert_array_equal(np.asarray(same), x)


@pytest.mark.parametrize('shape', [(2, 32, 32, 3), (1, 299, 299, 3), (3, 64, 48, 3)])
def test_output_shapes_for_any_input_size(shape):
    variables = inception.abstract_variables()
    out = jax.eval_shape(inception.FIDInceptionV3().apply, variables,
                         jax.ShapeDtypeStruct(shape, jnp.float32))
    b = shape[0]
    assert {k: v.shape for k, v in out.items()} == {
        'pool3': (b, 2048), 'logits': (b, 1008), 'logits_unbiased': (b, 1008)}
    assert all(v.dtype == jnp.float32 for v in out.values())


def test_rejects_non_rgb_input():
    with pytest.raises(ValueError, match=r'\(B, H, W, 3\).*\(2, 32, 32\)'):
        jax.eval_shape(inception.FIDInceptionV3().apply, inception.abstract_variables(),
                       jax.ShapeDtypeStruct((2, 32, 32), jnp.float32))


def _random_variables(seed, zero_kernels=False, var_range=(0.5, 2.0)):
    """Variables of the right shapes: He-scaled conv kernels (or zeros), random BN affine and
    running statistics, random fc."""
    rng = np.random.default_rng(seed)
    flat = {}
    for path, v in traverse_util.flatten_dict(inception.abstract_variables()).items():
        leaf, shape = path[-1], v.shape
        if leaf == 'kernel' and len(shape) == 4:
            value = (np.zeros(shape) if zero_kernels
                     else rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[:3])))
        elif leaf == 'kernel':
            value = rng.normal(size=shape) * 0.05
        elif leaf == 'scale':
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == 'var':
            value = rng.uniform(*var_range, shape)
        else:  # BN bias, BN mean, fc bias
            value = rng.normal(size=shape) * 0.1
        flat[path] = value.astype(np.float32)
    return traverse_util.unflatten_dict(flat)


@pytest.fixture(scope='module')
def apply_fn():
    return jax.jit(inception.FIDInceptionV3().apply)


def test_forward_with_zero_kernels_is_closed_form(apply_fn):
    """With every conv kernel 0, each conv+BN+ReLU unit outputs the constant
    relu(bias - mean * scale / sqrt(var + 1e-3)) per channel, so pool3 is the concatenation
    of Mixed_7c's last units in branch order [1x1, 3x3_2a, 3x3_2b, 3x3dbl_3a, 3x3dbl_3b, pool]
    and logits = pool3 W + b. Checks eps, running-statistics BN, the concatenation order and fc."""
    variables = _random_variables(3, zero_kernels=True, var_range=(1e-3, 2e-3))  # eps matters
    images = np.random.default_rng(4).random((2, 32, 32, 3), dtype=np.float32)
    out = jax.tree_util.tree_map(np.asarray, apply_fn(variables, images))
    block_p, block_s = variables['params']['Mixed_7c'], variables['batch_stats']['Mixed_7c']

    def unit(name):
        p, s = block_p[name]['bn'], block_s[name]['bn']
        f64 = lambda a: a.astype(np.float64)
        return np.maximum(
            f64(p['bias']) - f64(s['mean']) * f64(p['scale']) / np.sqrt(f64(s['var']) + 1e-3), 0)

    expected = np.concatenate([unit(n) for n in (
        'branch1x1', 'branch3x3_2a', 'branch3x3_2b', 'branch3x3dbl_3a', 'branch3x3dbl_3b',
        'branch_pool')])
    np.testing.assert_allclose(out['pool3'], np.broadcast_to(expected, (2, 2048)), rtol=1e-5,
                               atol=1e-6)
    fc = variables['params']['fc']
    np.testing.assert_allclose(
        out['logits'], np.broadcast_to(expected @ fc['kernel'] + fc['bias'], (2, 1008)),
        rtol=1e-4, atol=1e-5)


def test_forward_random_weights_consistency(apply_fn):
    """Per-example inference (running BN statistics, not batch statistics), ReLU'd pool3,
    logits = logits_unbiased + b, and a real dependence on the image."""
    variables = _random_variables(5)
    images = np.random.default_rng(6).random((2, 32, 32, 3), dtype=np.float32)
    out = jax.tree_util.tree_map(np.asarray, apply_fn(variables, images))
    swapped = jax.tree_util.tree_map(np.asarray, apply_fn(variables, images[::-1]))
    assert all(np.all(np.isfinite(v)) for v in out.values())
    np.testing.assert_allclose(swapped['pool3'], out['pool3'][::-1], rtol=1e-5, atol=1e-6)
    assert np.all(out['pool3'] >= 0) and np.abs(out['pool3'][0] - out['pool3'][1]).max() > 1e-3
    fc = variables['params']['fc']
    np.testing.assert_allclose(out['logits'] - out['logits_unbiased'],
                               np.broadcast_to(fc['bias'], (2, 1008)), atol=1e-5)
    np.testing.assert_allclose(out['logits_unbiased'],
                               out['pool3'].astype(np.float64) @ fc['kernel'], rtol=1e-4, atol=1e-4)
