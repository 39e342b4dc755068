"""Score networks on tiny configs: shapes of every NCSN++ variant, FIR resampling, no batch
mixing, bfloat16 vs float32, class conditioning and the classifier-free-guidance null label.

Shapes use jax.eval_shape (no compilation). Numerical tests run each tiny network through
one jitted apply, with random (not the zero-output default) weights so outputs are
informative.
"""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
import sde_lib
from configs.ve import ncsnpp_cifar10_continuous, ncsnv2_cifar10
from configs.vp import ddpm_digits
from models import layers, ncsnv2
from models import up_or_down_sampling as updown

B, SIZE = 3, 8
NUM_CLASSES = 3
#: Relative L2 error allowed between bfloat16 and float32 outputs of the same weights.
#: bfloat16 rounds to 8 significant bits (2^-9 relative per op); through the tiny NCSN++'s
#: ~70 convolutions and matmuls the measured error is 0.004, so 0.02 leaves 5x headroom.
BF16_RTOL = 0.02


def tiny_config(base=ncsnpp_cifar10_continuous, **model):
    """An 8x8 two-level version of a published config, with config.model fields overridden."""
    config = base.get_config()
    config.data.image_size = SIZE
    config.model.nf = 8
    if config.model.name != "ncsnv2_64":
        config.model.ch_mult = (1, 2)
        config.model.num_res_blocks = 1
        config.model.attn_resolutions = (4,)
    for field, value in model.items():
        config.model[field] = value
    return config


def inputs(channels=3, seed=0):
    rng = np.random.RandomState(seed)
    x = jnp.asarray(rng.uniform(size=(B, SIZE, SIZE, channels)), jnp.float32)
    time_cond = jnp.asarray(rng.uniform(0.5, 5.0, size=(B,)), jnp.float32)
    return x, time_cond


def random_variables(config, seed=0):
    """Variables of the config's model with every leaf ~ N(0, 1/fan_in) (scales ~ 1), without compiling init."""
    shapes = jax.eval_shape(lambda r: models.init_model(r, config), jax.random.PRNGKey(0))
    rng = np.random.RandomState(seed)

    def fill(path, leaf):
        fan_in = max(int(np.prod(leaf.shape[:-1])), 1)
        value = rng.normal(size=leaf.shape) / np.sqrt(fan_in)
        if jax.tree_util.keystr(path).endswith(("'scale']", "'gamma']", "'alpha']")):
            value = 1.0 + 0.1 * value
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.lru_cache(maxsize=None)
def jitted_apply(config_key):
    """One compiled apply(variables, x, t, labels) per tiny config (labels None is a separate trace)."""
    config = CONFIGS[config_key]()
    model = models.get_model(config)
    return config, jax.jit(lambda v, x, t, labels=None: model.apply(v, x, t, labels=labels))


CONFIGS = {
    "ncsnpp": lambda: tiny_config(resblock_type="biggan", progressive="output_skip", progressive_input="input_skip",
                                  num_classes=NUM_CLASSES),
    "ncsnpp_bf16": lambda: tiny_config(resblock_type="biggan", progressive="output_skip",
                                       progressive_input="input_skip", num_classes=NUM_CLASSES, dtype="bfloat16"),
    "ddpm": lambda: tiny_config(ddpm_digits, num_classes=NUM_CLASSES),
    "ncsnv2": lambda: tiny_config(ncsnv2_cifar10, num_classes=NUM_CLASSES),
}


# --- FIR resampling ------------------------------------------------------------------------

def test_fir_up_then_down_of_a_constant_is_the_constant_inside_the_border():
    x = jnp.full((1, 8, 8, 2), 3.0)
    up = updown.upsample_2d(x, (1, 3, 3, 1))
    down = updown.downsample_2d(up, (1, 3, 3, 1))
    assert up.shape == (1, 16, 16, 2) and down.shape == x.shape
    # Zero padding outside the image shows within one (input) pixel of the border, as in StyleGAN2.
    np.testing.assert_allclose(up[:, 1:-1, 1:-1], 3.0, rtol=1e-6)
    np.testing.assert_allclose(down[:, 1:-1, 1:-1], 3.0, rtol=1e-6)


def test_fir_box_kernel_is_nearest_and_average_pooling():
    x = jnp.asarray(np.random.RandomState(0).normal(size=(2, 4, 6, 3)), jnp.float32)
    np.testing.assert_allclose(updown.upsample_2d(x, (1, 1)), updown.naive_upsample_2d(x), atol=1e-6)
    np.testing.assert_allclose(updown.downsample_2d(x, (1, 1)), updown.naive_downsample_2d(x), atol=1e-6)


def test_upfirdn2d_is_a_true_convolution():
    delta = jnp.zeros((1, 5, 5, 1)).at[0, 2, 2, 0].set(1.0)
    k = np.arange(9.0).reshape(3, 3)
    np.testing.assert_allclose(updown.upfirdn2d(delta, k, pad=(1, 1))[0, 1:4, 1:4, 0], k)


def test_fused_resampling_convs_equal_resample_then_conv_inside_the_border():
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.normal(size=(1, 8, 8, 2)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)
    conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1), padding="SAME",
                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(updown.upsample_conv_2d(x, w)[:, 2:-2, 2:-2],
                               conv(updown.upsample_2d(x), w)[:, 2:-2, 2:-2], atol=1e-5)
    np.testing.assert_allclose(updown.conv_downsample_2d(x, w)[:, 1:-1, 1:-1],
                               updown.downsample_2d(conv(x, w))[:, 1:-1, 1:-1], atol=1e-5)


# --- shapes --------------------------------------------------------------------------------

INPUT_PATHS = [("none", "sum"), ("input_skip", "sum"), ("input_skip", "cat"), ("residual", "sum")]


def output_shape(config, labels=None):
    model = models.get_model(config)
    x, t = inputs()
    return jax.eval_shape(lambda r: model.init_with_output({"params": r}, x, t, labels=labels)[0],
                          jax.random.PRNGKey(0))


@pytest.mark.parametrize("resblock_type,progressive,input_path",
                         list(itertools.product(["ddpm", "biggan"], ["none", "output_skip", "residual"], INPUT_PATHS)))
def test_ncsnpp_output_has_input_shape_for_every_variant(resblock_type, progressive, input_path):
    progressive_input, combine = input_path
    config = tiny_config(resblock_type=resblock_type, progressive=progressive, progressive_input=progressive_input,
                         progressive_combine=combine, fir=True)
    out = output_shape(config)
    assert out.shape == (B, SIZE, SIZE, 3) and out.dtype == jnp.float32


@pytest.mark.parametrize("resblock_type", ["ddpm", "biggan"])
def test_ncsnpp_without_fir_output_has_input_shape(resblock_type):
    config = tiny_config(resblock_type=resblock_type, progressive="residual", progressive_input="residual", fir=False)
    assert output_shape(config).shape == (B, SIZE, SIZE, 3)


@pytest.mark.parametrize("embedding_type", ["fourier", "positional"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_ncsnpp_embeddings_and_dtypes_give_float32_outputs_of_input_shape(embedding_type, dtype):
    out = output_shape(tiny_config(embedding_type=embedding_type, dtype=dtype, num_classes=NUM_CLASSES),
                       labels=jnp.zeros((B,), jnp.int32))
    assert out.shape == (B, SIZE, SIZE, 3) and out.dtype == jnp.float32


@pytest.mark.parametrize("name,size", [("ncsnv2_64", 8), ("ncsnv2_128", 16), ("ncsnv2_256", 16)])
def test_ncsnv2_variants_output_has_input_shape(name, size):
    config = tiny_config(ncsnv2_cifar10, name=name)
    model = models.get_model(config)
    x = jnp.zeros((2, size, size, 3))
    out = jax.eval_shape(lambda r: model.init_with_output({"params": r}, x, jnp.ones(2))[0], jax.random.PRNGKey(0))
    assert out.shape == x.shape and out.dtype == jnp.float32


@pytest.mark.parametrize("field,value,message", [
    ("resblock_type", "resnet", "config.model.resblock_type"),
    ("progressive", "skip", "config.model.progressive"),
    ("progressive_input", "skip", "config.model.progressive_input"),
    ("progressive_combine", "avg", "config.model.progressive_combine"),
    ("embedding_type", "learned", "config.model.embedding_type"),
    ("dtype", "float16", "config.model.dtype"),
])
def test_bad_config_values_raise_one_clear_sentence(field, value, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        output_shape(tiny_config(**{field: value}))


def test_fourier_embedding_needs_continuous_training_and_labels_need_num_classes():
    config = tiny_config()
    config.training.continuous = False
    with pytest.raises(ValueError, match="continuous"):
        output_shape(config)
    with pytest.raises(ValueError, match="num_classes"):
        output_shape(tiny_config(), labels=jnp.zeros((B,), jnp.int32))


# --- numerics (one compiled apply per tiny network) ----------------------------------------

@pytest.mark.parametrize("key", ["ncsnpp", "ddpm", "ncsnv2"])
def test_no_batch_mixing_and_labels_change_the_output(key):
    config, apply = jitted_apply(key)
    variables = random_variables(config)
    x, t = inputs(config.data.num_channels)
    labels = jnp.arange(B, dtype=jnp.int32) % NUM_CLASSES
    out = apply(variables, x, t, labels)
    assert out.shape == x.shape and out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))

    j = B - 1
    perturbed = apply(variables, x.at[j].add(1.0), t, labels)
    np.testing.assert_allclose(perturbed[:j], out[:j], rtol=0, atol=1e-6)
    assert not np.allclose(perturbed[j], out[j])

    relabelled = apply(variables, x, t, labels.at[0].set((labels[0] + 1) % NUM_CLASSES))
    assert not np.allclose(relabelled[0], out[0])
    np.testing.assert_allclose(relabelled[1:], out[1:], rtol=0, atol=1e-6)


def test_null_label_is_the_unconditional_branch():
    config, apply = jitted_apply("ncsnpp")
    variables = random_variables(config)
    x, t = inputs()
    null = apply(variables, x, t, jnp.full((B,), NUM_CLASSES, jnp.int32))
    np.testing.assert_allclose(apply(variables, x, t, None), null, rtol=1e-6, atol=1e-6)
    assert not np.allclose(apply(variables, x, t, jnp.zeros((B,), jnp.int32)), null)


def test_bfloat16_output_matches_float32():
    config, apply32 = jitted_apply("ncsnpp")
    _, apply16 = jitted_apply("ncsnpp_bf16")
    variables = random_variables(config)  # float32 parameters serve both
    x, t = inputs()
    labels = jnp.zeros((B,), jnp.int32)
    out32, out16 = apply32(variables, x, t, labels), apply16(variables, x, t, labels)
    assert out16.dtype == jnp.float32
    rel = float(jnp.linalg.norm(out16 - out32) / jnp.linalg.norm(out32))
    print(f"bfloat16 vs float32 relative L2 error {rel:.4f}")
    assert rel < BF16_RTOL, rel


# --- NCSNv2 pieces ---------------------------------------------------------------------------

def test_aligned_corner_bilinear_resize_reproduces_a_linear_ramp():
    ramp = jnp.asarray(np.add.outer(np.arange(4.0), 10 * np.arange(4.0)))[None, :, :, None]
    out = ncsnv2.resize_bilinear(ramp, (7, 10))
    expected = np.add.outer(np.linspace(0, 3, 7), 10 * np.linspace(0, 3, 10))
    np.testing.assert_allclose(out[0, :, :, 0], expected, atol=1e-5)


def test_instance_norm_plus_closed_form():
    x = jnp.asarray(np.random.RandomState(0).normal(loc=[1.0, -2.0, 5.0], scale=3.0, size=(2, 6, 6, 3)), jnp.float32)
    norm = ncsnv2.InstanceNormPlus()
    variables = {"params": {"gamma": jnp.full(3, 2.0), "alpha": jnp.full(3, 0.5), "beta": jnp.full(3, 1.0)}}
    out = norm.apply(variables, x)
    mu = x.mean(axis=(1, 2))
    mu_plus = (mu - mu.mean(-1, keepdims=True)) / jnp.sqrt(mu.var(-1, ddof=1, keepdims=True) + 1e-5)
    # Per channel: mean gamma alpha mu_plus + beta, std gamma (up to eps).
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 2.0 * 0.5 * mu_plus + 1.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 2.0, rtol=1e-4)


# --- GroupNorm group counts (config.model.norm_groups) ---------------------------------------

@pytest.mark.parametrize("groups,count", [("fixed_32", 32), ("quarter_channels", 16)])
def test_group_norm_rules_normalise_over_their_group_count(groups, count):
    x = jnp.asarray(np.random.RandomState(0).normal(size=(2, 4, 4, 64)) * np.arange(1, 65), jnp.float32)
    out, _ = layers_module_apply(lambda h: layers.group_norm(h, groups), x)
    g = np.asarray(x, np.float64).reshape(2, 4, 4, count, 64 // count)
    expected = (g - g.mean(axis=(1, 2, 4), keepdims=True)) / np.sqrt(g.var(axis=(1, 2, 4), keepdims=True) + 1e-6)
    np.testing.assert_allclose(out, expected.reshape(x.shape), atol=2e-4)


def layers_module_apply(fn, x):
    """Apply a function that creates Flax layers, with their default initial parameters."""
    import flax.linen as nn

    class Wrapped(nn.Module):
        @nn.compact
        def __call__(self, h):
            return fn(h)

    return Wrapped().init_with_output(jax.random.PRNGKey(0), x)


def test_published_configs_get_the_reference_group_counts():
    from configs.vp import ddpm_cifar10, ddpm_mnist_discrete, ddpmpp_cifar10_continuous

    assert ddpm_cifar10.get_config().model.norm_groups == "fixed_32"
    assert ddpmpp_cifar10_continuous.get_config().model.norm_groups == "quarter_channels"
    assert ncsnpp_cifar10_continuous.get_config().model.norm_groups == "quarter_channels"
    assert ddpm_mnist_discrete.get_config().model.norm_groups == "quarter_channels"  # trained here before the option
    with pytest.raises(ValueError, match="norm_groups='quarter_channels'"):
        output_shape(tiny_config(ddpm_digits, norm_groups="fixed_32"))  # 8 channels cannot make 32 groups


# --- patches (config.model.patch_size) -----------------------------------------------------

def test_fold_patches_places_patch_pixel_i_j_channel_c_at_i_p_plus_j_times_C_plus_c_and_unfolds_back():
    x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
    folded = sde_lib.fold_patches(x, 2)
    assert folded.shape == (2, 2, 3, 12)
    for i, j, c in itertools.product(range(2), range(2), range(3)):
        np.testing.assert_array_equal(folded[:, 1, 2, (i * 2 + j) * 3 + c], x[:, 2 + i, 4 + j, c])
    np.testing.assert_array_equal(sde_lib.unfold_patches(folded, 2), x)
    with pytest.raises(ValueError, match="does not split into 4x4 patches"):
        sde_lib.fold_patches(x, 4)


def test_a_patched_ddpm_is_the_plain_ddpm_on_folded_images():
    """patch_size 2 on 8x8x3 images = the patch_size 1 network on 4x4x12 folded images, same variables."""
    patched = tiny_config(ddpm_digits, patch_size=2, ch_mult=(1, 2), attn_resolutions=(2,))
    plain = tiny_config(ddpm_digits, ch_mult=(1, 2), attn_resolutions=(2,))
    plain.data.image_size, plain.data.num_channels = SIZE // 2, 12
    variables = random_variables(plain)
    x, t = inputs(3)
    out = models.get_model(patched).apply(variables, x, t)
    reference = sde_lib.unfold_patches(models.get_model(plain).apply(variables, sde_lib.fold_patches(x, 2), t), 2)
    assert out.shape == x.shape
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)


def test_a_width_groupnorm_cannot_split_is_refused_with_advice_that_fits_the_rule():
    """quarter_channels at 144 channels (nf 48's skip concatenation) has min(36, 32) = 32 groups: the error names
    the width and does not suggest the rule already in use; fixed_32 at 48 suggests quarter_channels."""
    with pytest.raises(ValueError, match=r"32 groups \('quarter_channels'\).*got 144; choose config.model.nf") as e:
        layers.group_norm(jnp.zeros((1, 2, 2, 144)), "quarter_channels")
    assert "set config.model.norm_groups" not in str(e.value)
    with pytest.raises(ValueError, match=r"got 48; .* or set config.model.norm_groups='quarter_channels'"):
        layers.group_norm(jnp.zeros((1, 2, 2, 48)), "fixed_32")
