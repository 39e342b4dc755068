"""evaluation.lpips: the LPIPS distance from local .pth files, on small random weights written here."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evaluation.lpips import LPIPS, SCALE, SHIFT, VGG16_CFG, VGG16_TAPS, load_lpips
from models.convert import ConversionError
from tests.test_pth import contiguous, write_pth

TINY_CFG, TINY_TAPS = (4, "M", 6), (1, 4)  # features.0 conv, .1 relu (tap), .2 pool, .3 conv, .4 relu (tap)


def _save(path, arrays):
    write_pth(path, {k: contiguous(str(i), a.shape) for i, (k, a) in enumerate(arrays.items())},
              {str(i): np.ascontiguousarray(a, np.float32).ravel() for i, a in enumerate(arrays.values())})
    return str(path)


def _tiny_files(tmp_path, seed=0, heads_shape_error=False):
    rng = np.random.default_rng(seed)
    vgg = {"features.0.weight": rng.normal(size=(4, 3, 3, 3)), "features.0.bias": rng.normal(size=4),
           "features.3.weight": rng.normal(size=(6, 4, 3, 3)) / 4, "features.3.bias": rng.normal(size=6),
           "classifier.0.weight": rng.normal(size=(2, 5))}
    heads = {"lin0.model.1.weight": rng.uniform(size=(1, 4, 1, 1)),
             "lin1.model.1.weight": rng.uniform(size=(1, 5 if heads_shape_error else 6, 1, 1))}
    return _save(tmp_path / "vgg16.pth", vgg), _save(tmp_path / "lpips_vgg.pth", heads)


def test_distance_is_zero_on_equal_images_symmetric_and_positive(tmp_path):
    model, params = load_lpips(*_tiny_files(tmp_path), cfg=TINY_CFG, taps=TINY_TAPS)
    x0, x1 = jax.random.uniform(jax.random.PRNGKey(0), (2, 2, 8, 8, 3), minval=-1, maxval=1)
    d = lambda a, b: model.apply({"params": params}, a, b)
    np.testing.assert_array_equal(d(x0, x0), 0.0)
    np.testing.assert_allclose(d(x0, x1), d(x1, x0), rtol=1e-6)
    assert d(x0, x1).shape == (2,) and np.all(d(x0, x1) > 0)


def test_one_layer_trunk_by_hand():
    """A 1x2 image through one conv whose 3x3 kernel is zero but at its centre: a per-pixel affine map."""
    w = np.array([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]], np.float32)  # (out C=2, in 3)
    b = np.array([0.1, 0.4], np.float32)
    head = np.array([0.7, 1.5], np.float32)
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    kernel[1, 1] = w.T
    params = {"features_0": {"kernel": kernel, "bias": b}, "lin0": {"model_1": {"kernel": head.reshape(1, 1, 2, 1)}}}
    x0 = np.array([[[[0.2, -0.5, 0.9], [-1.0, 0.0, 0.3]]]], np.float32)
    x1 = np.array([[[[0.1, 0.4, -0.2], [0.6, -0.8, 0.5]]]], np.float32)
    got = LPIPS(cfg=(2,), taps=(1,)).apply({"params": params}, x0, x1)
    total = 0.0
    for p in range(2):
        f = [np.maximum(w @ ((x[0, 0, p] - np.array(SHIFT)) / np.array(SCALE)) + b, 0.0) for x in (x0, x1)]
        f = [v / (np.sqrt(np.sum(v ** 2)) + 1e-10) for v in f]
        total += np.sum(head * (f[0] - f[1]) ** 2) / 2  # mean over the 2 pixels
    np.testing.assert_allclose(got, [total], rtol=1e-5)


def test_vgg16_layout_is_torchvisions():
    x = jnp.zeros((1, 32, 32, 3))
    params = jax.eval_shape(LPIPS().init, jax.random.PRNGKey(0), x, x)["params"]
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert sorted(k for k in params if k.startswith("features_")) == sorted(f"features_{i}" for i in convs)
    assert [params[f"lin{i}"]["model_1"]["kernel"].shape[2] for i in range(5)] == [64, 128, 256, 512, 512]
    assert params["features_28"]["kernel"].shape == (3, 3, 512, 512)
    assert VGG16_CFG.count("M") == 4 and len(VGG16_TAPS) == 5


def test_missing_and_misshapen_files_are_one_line_errors(tmp_path):
    vgg, heads = _tiny_files(tmp_path, heads_shape_error=True)
    with pytest.raises(ConversionError, match=r"LPIPS head weights file .*nothing\.pth does not exist"):
        load_lpips(vgg, str(tmp_path / "nothing.pth"), cfg=TINY_CFG, taps=TINY_TAPS)
    with pytest.raises(ConversionError, match=r"lpips_vgg\.pth does not match .*lin1\.model\.1\.weight \(1, 5, 1, 1\)"
                       r" \(the network has \(1, 6, 1, 1\)\)"):
        load_lpips(vgg, heads, cfg=TINY_CFG, taps=TINY_TAPS)
    with pytest.raises(ConversionError, match=r"vgg16\.pth does not match the network: .*missing: features_5\.bias"):
        load_lpips(vgg, heads, cfg=(4, "M", 6, 8), taps=(1, 4, 6))
