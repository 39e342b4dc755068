"""The training slice on real data (scikit-learn digits): learning, checkpoints, resume."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
import losses
import models
import sde_lib
import training.state as training_state
from helpers import tiny_config
from modes.train import train
from tasks import score as score_task
from training import parallel
from training.checkpoint import Checkpointer
from training import loop
from training.loop import fuse_steps


def make_state(config, seed=0):
    model = models.get_model(config)
    optimizer = training_state.get_optimizer(config.optim)
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
    return model, optimizer, training_state.create_train_state(state_rng, models.init_model(init_rng, config, model), optimizer)


def leaves_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))


def test_twenty_steps_on_digits_lower_the_loss():
    config = tiny_config()
    sde = sde_lib.from_config(config)
    model, optimizer, state = make_state(config)
    scaler = datasets.get_data_scaler(config)
    train_data, _ = datasets.get_dataset(config)
    step = fuse_steps(score_task.step_fn_from_config(config, sde, model, train=True, optimizer=optimizer, scaler=scaler),
                      donate=False)
    probe = scaler(jnp.asarray(train_data.batch(0, 512, augment=False)["image"]))

    @jax.jit
    def probe_loss(params):  # fixed data, noise levels and noise: a deterministic function of params
        score_fn = models.get_score_fn(sde, model, {"params": params}, continuous=False)
        return losses.score_matching_loss(jax.random.PRNGKey(7), score_fn, probe, sde, continuous=False,
                                          reduce_mean=True)

    before = float(probe_loss(state.params))
    for batch in train_data.batches(16):
        state, _ = step(state, batch, None)
        if int(state.step) == 20:
            break
    after = float(probe_loss(state.params))
    # An eps-predictor whose last layer starts at zero predicts 0, so the initial loss is E[z^2] = 1.
    assert before == pytest.approx(1.0, abs=0.05)
    assert after < 0.8 * before, (before, after)


def test_checkpoint_round_trip_restores_the_identical_state(tmp_path):
    config = tiny_config()
    sde = sde_lib.from_config(config)
    model, optimizer, state = make_state(config)
    step = fuse_steps(score_task.step_fn_from_config(config, sde, model, train=True, optimizer=optimizer), donate=False)
    train_data, _ = datasets.get_dataset(config)
    state, _ = step(state, next(train_data.batches(16, steps_per_call=2)), None)
    checkpointer = Checkpointer(str(tmp_path))
    checkpointer.save(2, state, periodic=True)
    checkpointer.wait()

    _, _, fresh = make_state(config, seed=1)  # a different init: restoring must overwrite every leaf
    assert not leaves_equal(fresh.params, state.params)
    restored, restored_step = Checkpointer(str(tmp_path)).restore_latest(fresh)
    assert restored_step == 2 and int(restored.step) == 2
    assert leaves_equal(restored, state)
    assert type(restored) is type(state)


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_resumed_run_continues_from_the_saved_step_and_matches_an_uninterrupted_run(tmp_path):
    config = tiny_config()
    interrupted, straight = str(tmp_path / "interrupted"), str(tmp_path / "straight")

    config.training.n_iters = 8
    train(config, interrupted)
    first_leg = read_metrics(interrupted)
    config.training.n_iters = 16
    train(config, interrupted)
    second_leg = read_metrics(interrupted)[len(first_leg):]
    train(config, straight)

    assert max(m["step"] for m in first_leg) == 8
    assert min(m["step"] for m in second_leg) == 10  # the first log after resuming at step 8
    assert sorted(Checkpointer(interrupted).periodic.all_steps()) == [4, 8, 12, 16]

    _, _, like = make_state(config)
    like = parallel.replicate(like, parallel.make_mesh())
    resumed_state, _ = Checkpointer(interrupted).restore_latest(like)
    straight_state, _ = Checkpointer(straight).restore_latest(like)
    assert int(resumed_state.step) == 16
    assert leaves_equal(resumed_state, straight_state)
    # ... and the same loss curves (the eval batches, too, are a function of the step).
    for key in ("loss", "eval_loss"):
        straight_curve = {m["step"]: m[key] for m in read_metrics(straight) if key in m}
        resumed_curve = {m["step"]: m[key] for m in first_leg + second_leg if key in m}
        assert resumed_curve == straight_curve, key


def test_label_dropout_rate_and_null_label():
    from losses import drop_labels

    labels = jax.random.randint(jax.random.PRNGKey(0), (20000,), 0, 10)
    np.testing.assert_array_equal(drop_labels(jax.random.PRNGKey(1), labels, 10, 0.0), labels)
    assert np.all(np.asarray(drop_labels(jax.random.PRNGKey(1), labels, 10, 1.0)) == 10)
    dropped = np.asarray(drop_labels(jax.random.PRNGKey(1), labels, 10, 0.3))
    kept = dropped != 10
    np.testing.assert_array_equal(dropped[kept], np.asarray(labels)[kept])
    # Binomial(20000, 0.3): standard deviation sqrt(n p (1-p)) / n = 0.0032; allow 5 of them.
    assert abs((~kept).mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / 20000)


def test_class_conditional_training_step_uses_and_drops_labels():
    """A conditional model's training loss depends on the labels; with label_dropout=1 (every label
    replaced by the null label) it does not. Same state and rng, only the labels differ."""
    config = tiny_config()
    config.model.num_classes = 10
    sde = sde_lib.from_config(config)
    model, optimizer, state = make_state(config)
    batch = next(datasets.get_dataset(config)[0].batches(16))
    batch = jax.tree_util.tree_map(lambda x: x[0], batch)
    other = dict(batch, label=(batch["label"] + 1) % 10)
    for rate, differs in ((0.0, True), (1.0, False)):
        step = jax.jit(score_task.get_step_fn(sde, model, train=True, optimizer=optimizer, continuous=False,
                                          num_classes=10, label_dropout=rate))
        # zero-initialised output layers would hide the labels' effect: perturb every parameter
        trained = state.replace(params=jax.tree_util.tree_map(lambda p: p + 0.01, state.params))
        _, a = step(trained, batch)
        _, b = step(trained, other)
        assert (float(a) != float(b)) == differs


def test_adam_second_moment_decays_at_config_beta2():
    """Two Adam steps on gradients g1, g2 keep v = beta2 (1 - beta2) g1^2 + (1 - beta2) g2^2 (config.optim.beta2)."""
    optim = tiny_config().optim
    optim.update(beta2=0.9, warmup=0, grad_clip=-1.0)
    optimizer = training_state.get_optimizer(optim)
    params = {"w": jnp.ones(3)}
    opt_state = optimizer.init(params)
    g1, g2 = jnp.array([1.0, -2.0, 3.0]), jnp.array([0.5, 4.0, -1.0])
    for g in (g1, g2):
        _, opt_state = optimizer.update({"w": g}, opt_state, params)
    nu = [s for s in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda x: hasattr(x, "nu")) if hasattr(s, "nu")]
    np.testing.assert_allclose(nu[0].nu["w"], 0.9 * 0.1 * g1**2 + 0.1 * g2**2, rtol=1e-6)


def test_ema_warmup_follows_its_closed_form_and_leaves_long_runs_alone():
    """r_t = min(R, (1 + t) / (10 + t)): from e_0 = 0 with params stepping to 1, 2, 3 the EMA is
    e_1 = 0.9 * 1, e_2 = (2/11) e_1 + (9/11) 2, e_3 = (3/12) e_2 + (9/12) 3; without warm-up r_t = R."""
    sgd = __import__("optax").sgd(1.0)
    state = training_state.create_train_state(jax.random.PRNGKey(0), {"params": {"w": jnp.zeros(())}}, sgd)
    expected, rates = 0.0, [1 / 10, 2 / 11, 3 / 12]
    for t, r in enumerate(rates):
        state, _ = training_state.apply_gradients(state, jnp.zeros(()), {"w": -jnp.ones(())}, sgd,
                                                  jax.random.PRNGKey(1), ema_rate=0.999, ema_warmup=True)
        expected = r * expected + (1 - r) * (t + 1)
        np.testing.assert_allclose(state.ema_params["w"], expected, rtol=1e-6)
    assert float(training_state.ema_decay(jnp.asarray(100_000), 0.999, True)) == pytest.approx(0.999)
    assert float(training_state.ema_decay(jnp.asarray(3), 0.999, False)) == pytest.approx(0.999)


def test_cpu_train_options_compute_the_default_compilation_s_step(monkeypatch):
    """fuse_steps compiles with train_compiler_options() (YNNPACK for reductions only, on CPU); the loss, its
    gradient and the step equal what XLA compiles by default, to float32 rounding."""
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    options = loop.train_compiler_options()
    assert options == (loop.CPU_TRAIN_OPTIONS if jax.default_backend() == "cpu" else None)
    config = tiny_config()
    config.model.nf = 16  # the quickstart's width
    sde = sde_lib.from_config(config)
    model, optimizer, state = make_state(config)
    scaler = datasets.get_data_scaler(config)
    batch = next(datasets.get_dataset(config)[0].batches(32))
    x = scaler(jnp.asarray(batch["image"][0]))

    def loss_and_grad(params):
        return jax.value_and_grad(lambda p: losses.score_matching_loss(
            jax.random.PRNGKey(3), models.get_score_fn(sde, model, {"params": p}, continuous=False), x,
            sde, continuous=False, reduce_mean=True))(params)

    (loss_a, grad_a), (loss_b, grad_b) = (jax.jit(loss_and_grad, compiler_options=options)(state.params),
                                          jax.jit(loss_and_grad)(state.params))
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    scale = max(float(np.abs(g).max()) for g in jax.tree_util.tree_leaves(grad_b))
    for a, b in zip(jax.tree_util.tree_leaves(grad_a), jax.tree_util.tree_leaves(grad_b), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * scale)

    step_fn = score_task.step_fn_from_config(config, sde, model, train=True, optimizer=optimizer, scaler=scaler)
    fused = fuse_steps(step_fn, donate=False)
    (state_a, losses_a), (state_b, losses_b) = fused(state, batch, None), jax.jit(fused.__wrapped__)(state, batch, None)
    np.testing.assert_allclose(losses_a, losses_b, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(state_a.params), jax.tree_util.tree_leaves(state_b.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_xla_flags_choosing_the_fusions_win_and_unknown_options_are_left_out(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")
    assert loop.train_compiler_options() is None
    assert not loop._known((("xla_cpu_no_such_option", "x"),))  # an older XLA's answer to CPU_TRAIN_OPTIONS
