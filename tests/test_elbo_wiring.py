"""The variational bound wired in: the 'vlb' / 'hybrid' training losses of tasks/score.py, learned variances in
the network, the score function and the samplers, --mode eval's 'bound_bpd', and the refusals."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.traverse_util import flatten_dict
from helpers import tiny_config

import datasets
import models
import samplers
import sde_lib
import training.state as training_state
from configs.ve import ncsnv2_cifar10
from losses import chain, vdm, vlb
from modes.evaluate import check_bound, evaluate, make_bound_fn
from samplers.pc import AncestralSamplingPredictor
from tasks.score import init_state, restore_train_state, step_fn_from_config
from training import parallel
from training.checkpoint import Checkpointer
from training.validation import ConfigError

N = 25  # a short chain: linear betas up to beta_max / N = 0.8


def learned_config(loss="hybrid", sampling="uniform"):
    config = tiny_config()
    config.model.num_scales = N
    config.model.ch_mult, config.model.attn_resolutions = (1,), ()  # one resolution: quick to compile
    config.model.learned_variance = True
    config.training.loss = loss
    config.training.vlb_sampling = sampling
    return config


def perturbed_variables(config, model, seed=0):
    """Initial variables plus noise, so that the zero-initialised output layer gives non-zero eps and v."""
    variables = models.init_model(jax.random.PRNGKey(seed), config, model)
    leaves, tree = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    return jax.tree_util.tree_unflatten(tree, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


def test_learned_variance_network_has_2c_channels_and_the_score_uses_the_first_c():
    config = learned_config()
    sde, model = sde_lib.from_config(config), models.get_model(config)
    variables = perturbed_variables(config, model)
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 8, 8, 1))
    i = jnp.array([0, 7, N - 1])
    t = sde.step_time(i)
    out = model.apply(variables, x, i.astype(jnp.float32))  # the digits config's 'floor_index' label is i
    assert out.shape == (3, 8, 8, 2)
    sigma = sde_lib.VPSDE(N=N).discrete_marginal_coeffs(i)[1]
    score = models.get_score_fn(sde, model, variables, continuous=False)(x, t)
    np.testing.assert_allclose(score, -out[..., :1] / sigma[:, None, None, None], rtol=1e-5)
    score_v, v = models.get_score_fn(sde, model, variables, continuous=False, with_variance=True)(x, t)
    np.testing.assert_array_equal(score_v, score)
    np.testing.assert_allclose(v, (out[..., 1:] + 1) / 2, rtol=1e-6)
    np.testing.assert_array_equal(models.get_variance_fn(sde, model, variables, continuous=False)(x, t), v)


def _output_conv_update(lam):
    """(kernel, bias) change of the output conv (the only layer with 2C = 2 outputs) in one SGD(1) hybrid step."""
    config = learned_config("hybrid")
    config.training.vlb_lambda = lam
    sde, model, optimizer = sde_lib.from_config(config), models.get_model(config), optax.sgd(1.0)
    state = init_state(config, model, optimizer)
    state = state.replace(params=perturbed_variables(config, model)["params"])
    step = jax.jit(step_fn_from_config(config, sde, model, train=True, optimizer=optimizer))
    batch = {"image": jax.random.uniform(jax.random.PRNGKey(4), (8, 8, 8, 1)), "label": jnp.zeros(8, jnp.int32)}
    after, loss = step(state, batch)
    assert np.isfinite(loss)
    change = flatten_dict(jax.tree_util.tree_map(lambda a, b: a - b, after.params, state.params))
    [conv] = [path[:-1] for path, p in change.items() if path[-1] == "kernel" and p.shape[-1] == 2]
    return change[conv + ("kernel",)], change[conv + ("bias",)]


def test_hybrid_step_trains_the_mean_only_through_l_simple():
    """The vlb term's stop_gradient: the eps output channel's update is the same with lambda = 0 and 100 (and the
    v channel's is not: the bound trains the variance)."""
    k0, b0 = _output_conv_update(0.0)
    k1, b1 = _output_conv_update(100.0)
    np.testing.assert_allclose(k1[..., 0], k0[..., 0], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(b1[0], b0[0], rtol=1e-5, atol=1e-8)
    assert np.max(np.abs(k0[..., 1])) == 0 and np.max(np.abs(k1[..., 1])) > 0


def test_importance_sampled_vlb_carries_its_history_in_the_state():
    config = learned_config("vlb", "importance")
    sde, model, optimizer = sde_lib.from_config(config), models.get_model(config), optax.adam(1e-3)
    state = init_state(config, model, optimizer)
    assert state.model_state[chain.HISTORY]["values"].shape == (N, 10)
    step = jax.jit(step_fn_from_config(config, sde, model, train=True, optimizer=optimizer))
    batch = {"image": jax.random.uniform(jax.random.PRNGKey(4), (8, 8, 8, 1)), "label": jnp.zeros(8, jnp.int32)}
    state, loss = step(state, batch)
    assert np.isfinite(loss) and int(jnp.sum(state.model_state[chain.HISTORY]["counts"])) == 8


def test_samplers_interpolate_the_learned_variance_between_the_chains_bounds():
    """N(0, I) data (score -x at every t): pc's ancestral step with v = 1 is DDPM's beta_t step; DDIM (eta = 1)
    with v = 0 is its own posterior-variance step; pc with v = 0 uses beta~_t, a different path."""
    sde, shape, rng = sde_lib.VPSDE(N=40), (4, 3), jax.random.PRNGKey(0)
    score_fn = lambda x, t: -x
    ones, zeros = (lambda x, t: jnp.ones_like(x)), (lambda x, t: jnp.zeros_like(x))
    pc = samplers.get_sampler("pc", sde, shape, predictor="ancestral_sampling", corrector="none", denoise=False)
    assert samplers.takes_variance(pc)
    plain, _ = pc(rng, score_fn)
    assert np.all(np.isfinite(plain))
    np.testing.assert_allclose(pc(rng, score_fn, ones)[0], plain, rtol=1e-4, atol=1e-5)
    assert np.max(np.abs(pc(rng, score_fn, zeros)[0] - plain)) > 1e-3
    log_beta, log_beta_tilde = AncestralSamplingPredictor(sde, score_fn, 40)._log_variances(jnp.arange(40))
    table = vlb.DiscreteChain.from_sde(sde)  # the bounds the training loss interpolates
    np.testing.assert_allclose(log_beta, np.log(table.betas), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(log_beta_tilde, table.posterior_log_variance, rtol=1e-4, atol=1e-5)
    ddim = samplers.get_sampler("ddim", sde, shape, eta=1.0, num_steps=7)
    np.testing.assert_allclose(ddim(rng, score_fn, zeros)[0], ddim(rng, score_fn)[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="VESDE has none"):
        samplers.get_sampler("ddim", sde_lib.VESDE(N=20), shape, eta=1.0)(rng, score_fn, ones)


@pytest.fixture(scope="module")
def bound_workdir(tmp_path_factory):
    """Checkpoint 1 (step 4) of a (perturbed) learned-variance tiny model."""
    root = tmp_path_factory.mktemp("bound")
    config = learned_config()
    model = models.get_model(config)
    state = training_state.create_train_state(jax.random.PRNGKey(1), perturbed_variables(config, model),
                                              training_state.get_optimizer(config.optim)).replace(step=jnp.asarray(4))
    with Checkpointer(str(root)) as checkpointer:
        checkpointer.save(4, state, periodic=True)
        checkpointer.wait()
    return root


def test_eval_bound_is_vlb_bound_bpd_of_the_test_images(bound_workdir):
    config = learned_config()
    config.eval.update(enable_loss=False, enable_bound=True, batch_size=179)
    [result] = evaluate(config, str(bound_workdir), "eval")
    with open(bound_workdir / "eval" / "ckpt_1.json") as f:
        assert json.load(f)["bound_bpd"] == result["bound_bpd"]

    model = models.get_model(config)
    state = restore_train_state(Checkpointer(str(bound_workdir)), 4, config, model, parallel.make_mesh())

    def eps_fn(x, i):  # by hand: the network's two halves at its 'floor_index' label i
        out = model.apply(state.ema_variables, x, i.astype(jnp.float32))
        return out[..., :1], out[..., 1:]

    images = datasets.load_split(config, "test", host_index=0, host_count=1).images
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), 1), 2), 0)
    expected = jax.jit(lambda x, r: vlb.bound_bpd(eps_fn, x, sde_lib.from_config(config).discrete_betas, r,
                                                  "learned"))(images, rng)
    assert result["bound_bpd"]["num_images"] == 179 and result["bound_bpd"]["mean_nfe"] == N
    assert result["bound_bpd"]["bound_bpd"] == pytest.approx(float(np.mean(expected)), rel=1e-5)

    config.eval.bpd_num_examples = 100  # the first 100 test images: one round, masked past them
    [first] = evaluate(config, str(bound_workdir), "eval_first")
    assert first["bound_bpd"]["num_images"] == 100
    assert first["bound_bpd"]["bound_bpd"] == pytest.approx(float(np.mean(expected[:100])), rel=1e-5)


def test_continuous_time_bound_is_vdm_bound_bpd_on_the_sdes_time():
    """make_bound_fn of a continuous-time VP model: vdm.bound_bpd with eps_hat(z, t) the network's eps at
    s = eps + (T - eps) t (label 999 s), by hand."""
    config = learned_config("dsm")
    config.model.learned_variance, config.training.continuous = False, True
    sde, model = sde_lib.from_config(config), models.get_model(config)
    variables = perturbed_variables(config, model)
    images = datasets.load_split(config, "test", host_index=0, host_count=1).images[:4]
    rng = jax.random.PRNGKey(5)
    bound, nfe = make_bound_fn(config, sde, model)(rng, variables, images / np.float32(255))
    s_of = lambda t: 1e-5 + (sde.T - 1e-5) * t
    eps_fn = lambda z, t: model.apply(variables, z, 999.0 * s_of(t))
    expected = vdm.bound_bpd(eps_fn, images, vdm.vp_sde_gamma(sde, 1e-5), rng)
    assert nfe == 1
    np.testing.assert_allclose(bound, expected, rtol=1e-5)


def test_refusals_are_one_line_and_touch_nothing(bound_workdir, tmp_path):
    config = ncsnv2_cifar10.get_config()
    config.model.learned_variance = True
    with pytest.raises(ValueError, match=r"learned_variance=True needs a network that outputs 2C = 6 .*'ncsnv2_64'"):
        models.check_learned_variance(config)

    for change, match in [({"training.sde": "vesde"}, "VP SDE, not VESDE"),
                          ({"data.uniform_dequantization": True}, r"8-bit data in \[-1, 1\]")]:
        config = learned_config()
        config.eval.update(enable_loss=False, enable_bound=True)
        for field, value in change.items():
            group, name = field.split(".")
            config[group][name] = value
        with pytest.raises(ConfigError, match=match) as e:
            evaluate(config, str(bound_workdir), "refused")
        assert "\n" not in str(e.value)
    assert not (bound_workdir / "refused").exists()

    sde = sde_lib.from_config(learned_config())
    for loss, continuous, learned, match in [("vlb", True, False, "set training.continuous=False"),
                                             ("hybrid", False, False, "learned_variance=True"),
                                             ("dsm", False, True, "never trains the variance")]:
        with pytest.raises(ValueError, match=match):
            chain.check_options(sde, loss, continuous, learned)
    with pytest.raises(ValueError, match="not VESDE"):
        chain.check_options(sde_lib.VESDE(), "vlb", False, False)
    check_bound(learned_config(), sde)
