"""Data parallelism: 4 devices = 1 device, 2 hosts agree, fused steps = single steps, one compilation."""
import json
import logging
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import datasets
import models
import sde_lib
import training.state as training_state
from helpers import tiny_config
from train_worker import local_params
from training import parallel
from training.checkpoint import Checkpointer
from modes.train import train
from tasks import score as score_task
from training.loop import fuse_steps, train_compiler_options

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "train_worker.py")


def worker_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_PROCESSES")}
    env["JAX_COMPILATION_CACHE_DIR"] = "/tmp/score_sde_test_jax_cache"
    return dict(env, **extra)


def parse_report(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def restore_params(workdir):
    config = tiny_config()  # the optimizer's hyperparameters do not change the state's structure
    model = models.get_model(config)
    like = training_state.create_train_state(jax.random.PRNGKey(0), models.init_model(jax.random.PRNGKey(1), config, model),
                                     training_state.get_optimizer(config.optim))
    state, step = Checkpointer(str(workdir)).restore_latest(parallel.replicate(like, parallel.make_mesh()))
    return state, step


def test_four_devices_train_the_same_parameters_as_one(tmp_path):
    runs = {}
    # Adam turns a near-zero gradient g into an update lr * g / (|g| + eps): with the default eps = 1e-8 the
    # rounding of g, which depends on the order of the cross-device sum, becomes an lr-sized difference.
    # eps = 1e-4 keeps the comparison about the gradients themselves.
    for devices in (1, 4):
        result = subprocess.run([sys.executable, WORKER, str(tmp_path / f"d{devices}"), "4", "optim.eps=1e-4"],
                                capture_output=True,
                                text=True, timeout=600, cwd=REPO, env=worker_env(
                                    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}"))
        assert result.returncode == 0, result.stderr[-2000:]
        runs[devices] = parse_report(result.stdout)
        assert runs[devices]["devices"] == devices and runs[devices]["step"] == 4
    one, _ = restore_params(tmp_path / "d1")
    four, _ = restore_params(tmp_path / "d4")
    # Same global batch, same rng: only the order of the gradient's cross-device sum differs.
    for a, b in zip(jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(four.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two processes each compiling the train step: the default suite's longest test (~1 min idle)
def test_two_hosts_train_together_and_agree(tmp_path):
    """Two processes on 127.0.0.1 (jax.distributed, gloo collectives), one shared workdir."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, WORKER, str(tmp_path / "run"), "4"], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=worker_env(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                                             JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-6000:]
    reports = [parse_report(out) for out, _ in outputs]
    assert [r["process"] for r in reports] == [0, 1]
    assert all(r["devices"] == 2 and r["step"] == 4 for r in reports)
    assert reports[0]["params_sha256"] == reports[1]["params_sha256"]
    # One checkpoint directory per step, written collectively, holding those same parameters.
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["4"]
    state, step = restore_params(tmp_path / "run")
    assert step == 4
    assert float(sum(np.float64(p).sum() for p in local_params(state))) == pytest.approx(reports[0]["param_sum"])
    # Only process 0 writes logs.
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f if "loss" in line and "eval" not in line] == [2, 4]


def test_n_jitted_steps_equal_single_steps():
    config = tiny_config()
    sde = sde_lib.from_config(config)
    model = models.get_model(config)
    optimizer = training_state.get_optimizer(config.optim)
    state = training_state.create_train_state(jax.random.PRNGKey(0), models.init_model(jax.random.PRNGKey(1), config, model),
                                      optimizer)
    step_fn = score_task.step_fn_from_config(config, sde, model, train=True, optimizer=optimizer)
    batches = next(datasets.get_dataset(config)[0].batches(16, steps_per_call=3))
    fused_state, fused_losses = fuse_steps(step_fn, donate=False)(state, batches, None)
    single = jax.jit(step_fn, compiler_options=train_compiler_options())  # as fuse_steps compiles
    single_losses = []
    for k in range(3):
        state, loss = single(state, jax.tree_util.tree_map(lambda x: x[k], batches))
        single_losses.append(float(loss))
    np.testing.assert_allclose(np.asarray(fused_losses), single_losses, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(fused_state), jax.tree_util.tree_leaves(state), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_training_compiles_its_step_once(tmp_path, caplog):
    config = tiny_config()
    config.training.n_iters = 8
    config.training.n_jitted_steps = 2
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING, logger="jax._src.interpreters.pxla"):
            train(config, str(tmp_path))
    finally:
        jax.config.update("jax_log_compiles", False)
    compiled = [r.getMessage().split(" ")[1] for r in caplog.records if r.getMessage().startswith("Compiling ")]
    assert compiled.count("jit(train_steps)") == 1, compiled
    assert compiled.count("jit(eval_steps)") == 1, compiled
