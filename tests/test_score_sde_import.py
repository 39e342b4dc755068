"""score_sde_pytorch checkpoints run here: the seven random-weight fixtures (../shared/fixtures/score_sde_pytorch)
agree with the reference's network outputs and score functions, with the 'model' and the EMA weights.

The reference's figures are float32 computations; 1e-4 of the largest reference value is the tolerance
(reference_fixtures.relative_error). Measured: at most 1.5e-5 (DDPM), about 1e-6 for NCSN++.
"""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
import sde_lib
from models import pth
from models import convert
from models import score_sde_import as imp
from tests.reference_fixtures import fixture_path, load_io, nchw_to_nhwc, relative_error

# The two cases that differed before the conventions were options run by default; each case compiles a network
# (about a minute on 2 cores), so the other five are slow.
_SLOW = pytest.mark.slow
CASES = ["ddpm_vp_discrete", pytest.param("ddpmpp_vp_continuous", marks=_SLOW),
         pytest.param("ddpmpp_subvp_continuous", marks=_SLOW), pytest.param("ncsnpp_vp_continuous", marks=_SLOW),
         pytest.param("ncsnpp_ve_continuous", marks=_SLOW), "ncsnpp_ve_discrete",
         pytest.param("ncsnpp_ve_celebahq256_layout", marks=_SLOW)]
RTOL = 1e-4


def reference_config(case):
    with open(fixture_path("score_sde_pytorch", case + ".json")) as f:
        return imp.config_from_reference(json.load(f))


@functools.lru_cache(maxsize=None)
def imported(case):
    config = reference_config(case)
    return config, imp.load_checkpoint(fixture_path("score_sde_pytorch", case + ".pth"), config)


def scores(config, variables, x, t):
    sde, model = sde_lib.from_config(config), models.get_model(config)
    return jax.jit(models.get_score_fn(sde, model, variables, continuous=config.training.continuous))(x, t)


@pytest.mark.parametrize("case", CASES)
def test_fixture_agrees_at_the_network_and_the_score_with_both_weight_sets(case):
    config, result = imported(case)
    io = load_io("score_sde_pytorch", case + ".npz")
    x, t = jnp.asarray(nchw_to_nhwc(io["x_nchw"])), jnp.asarray(io["t"])
    sde, model = sde_lib.from_config(config), models.get_model(config)
    continuous = config.training.continuous
    np.testing.assert_allclose(sde.noise_label(t, continuous), io["labels"], rtol=1e-6)

    net = jax.jit(model.apply)(result.variables, x, jnp.asarray(io["labels"], jnp.float32))
    if config.model.scale_by_sigma:  # the reference divides by sigma inside its network
        net = sde_lib.batch_mul(1.0 / sde.perturbation_coeffs(t, continuous)[1], net)
    errors = {"net": relative_error(net, nchw_to_nhwc(io["net_out_nchw"])),
              "score": relative_error(scores(config, result.variables, x, t), nchw_to_nhwc(io["score_model_nchw"])),
              "ema": relative_error(scores(config, result.ema_variables, x, t), nchw_to_nhwc(io["score_ema_nchw"]))}
    print(case, {k: f"{v:.2e}" for k, v in errors.items()})
    assert max(errors.values()) < RTOL, errors
    # the EMA weights differ from the model's on purpose in the fixtures
    assert relative_error(nchw_to_nhwc(io["score_ema_nchw"]), nchw_to_nhwc(io["score_model_nchw"])) > 1e-2


def test_older_conventions_compute_something_else():
    """This framework's conventions before the options: floor(t (N-1)) into the ascending sigmas for
    discrete VE, min(C/4, 32) GroupNorm groups in DDPM. Both give other scores for the same weights."""
    for case, field, old in [("ncsnpp_ve_discrete", "discrete_labels", "floor_index"),
                             ("ddpm_vp_discrete", "norm_groups", "quarter_channels"),
                             ("ddpm_vp_discrete", "discrete_labels", "floor_index")]:
        config, result = imported(case)
        io = load_io("score_sde_pytorch", case + ".npz")
        x, t = jnp.asarray(nchw_to_nhwc(io["x_nchw"])), jnp.asarray(io["t"])
        config = config.copy_and_resolve_references()
        config.model[field] = old
        error = relative_error(scores(config, result.variables, x, t), nchw_to_nhwc(io["score_model_nchw"]))
        print(f"{case} with model.{field}={old!r}: relative error {error:.3g}")
        assert error > 100 * RTOL


def test_ve_discrete_old_labels_reverse_the_noise_scale():
    """floor_index feeds t (N-1) where score_sde feeds (1 - t)(N-1): the labels mirror, the sigmas nearly agree."""
    config, _ = imported("ncsnpp_ve_discrete")
    t = jnp.asarray(load_io("score_sde_pytorch", "ncsnpp_ve_discrete.npz")["t"])
    new = sde_lib.from_config(config)
    old = sde_lib.VESDE(config.model.sigma_min, config.model.sigma_max, config.model.num_scales,
                        discrete_labels="floor_index")
    np.testing.assert_allclose(new.noise_label(t, False) + old.noise_label(t, False), new.N - 1, atol=1)
    np.testing.assert_allclose(new.perturbation_coeffs(t, False)[1], old.perturbation_coeffs(t, False)[1], rtol=0.02)


def test_pth_reads_a_whole_training_checkpoint():
    checkpoint = pth.load(fixture_path("score_sde_pytorch", "ddpmpp_vp_continuous.pth"))
    assert set(checkpoint) == {"model", "ema", "optimizer", "step"}
    assert isinstance(checkpoint["ema"]["shadow_params"], list) and set(checkpoint["optimizer"]) == {
        "state", "param_groups"}
    trainable = [k for k in checkpoint["model"] if k != "module.sigmas"]
    assert [p.shape for p in checkpoint["ema"]["shadow_params"]] == [checkpoint["model"][k].shape for k in trainable]
    with pytest.raises(ValueError, match="not a state dict"):
        pth.load_state_dict(fixture_path("score_sde_pytorch", "ddpmpp_vp_continuous.pth"))


def test_module_order_is_the_reference_all_modules_order():
    order = imp.module_order(reference_config("ddpm_vp_discrete"))
    assert order[:4] == ["Dense_0", "Dense_1", "Conv_0", "ResnetBlockDDPM_0"] and order[-2:] == ["GroupNorm_0", "Conv_1"]
    order = imp.module_order(reference_config("ncsnpp_ve_continuous"))
    assert order[:3] == ["GaussianFourierProjection_0", "Dense_0", "Dense_1"]


def test_another_architecture_names_the_differing_parameter():
    config = reference_config("ddpmpp_vp_continuous")
    config.data.num_channels = 1
    path = fixture_path("score_sde_pytorch", "ddpmpp_vp_continuous.pth")
    with pytest.raises(convert.ConversionError, match=r"all_modules\.2\.weight \(16, 3, 3, 3\) \(the network has "
                                                      r"\(16, 1, 3, 3\)\)"):
        imp.load_checkpoint(path, config)
    config = reference_config("ncsnpp_ve_continuous")
    config.model.sigma_max = 80.0
    with pytest.raises(convert.ConversionError, match="'sigmas'"):
        imp.load_checkpoint(fixture_path("score_sde_pytorch", "ncsnpp_ve_continuous.pth"), config)


def test_a_truncated_file_is_one_line(tmp_path):
    with open(fixture_path("score_sde_pytorch", "ncsnpp_ve_discrete.pth"), "rb") as f:
        data = f.read()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(convert.ConversionError) as err:
        imp.load_checkpoint(str(path), reference_config("ncsnpp_ve_discrete"))
    assert "truncated" in str(err.value) and "\n" not in str(err.value)


def test_config_from_reference_takes_its_fields_and_conventions():
    ddpm, ncsnpp = reference_config("ddpm_vp_discrete"), reference_config("ncsnpp_ve_discrete")
    assert (ddpm.model.name, ddpm.model.nf, ddpm.model.ch_mult, ddpm.data.image_size) == ("ddpm", 32, (1, 2), 16)
    assert (ddpm.model.norm_groups, ncsnpp.model.norm_groups) == ("fixed_32", "quarter_channels")
    assert ncsnpp.model.discrete_labels == "score_sde" and ncsnpp.training.continuous is False
    assert (ncsnpp.model.progressive_input, ncsnpp.model.embedding_type) == ("residual", "positional")
