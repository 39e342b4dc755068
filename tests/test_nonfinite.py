"""A NaN/inf step stops the run naming it before any checkpoint holds it, or is skipped and counted."""
import math
import os

import jax
import numpy as np
import pytest

import datasets
from helpers import tiny_config
from test_cli import snapshot
from test_preemption import metrics
from test_training import leaves_equal, make_state
from training import parallel
from training.checkpoint import Checkpointer
from training.loss_window import NonFiniteLossError
from modes.train import train


@pytest.fixture
def nan_batches(monkeypatch):
    """nan_batches({4}) makes the train batch of step index 4 (the 5th optimizer step) all NaN."""
    bad = set()
    original = datasets.Dataset.batch

    def batch(self, step, global_batch, augment=True):
        out = original(self, step, global_batch, augment)
        if augment and step in bad:
            out = dict(out, image=np.full_like(out["image"], np.nan))
        return out

    monkeypatch.setattr(datasets.Dataset, "batch", batch)
    return bad.update


def config(**training):
    c = tiny_config()
    c.training.log_freq, c.training.snapshot_freq, c.training.snapshot_freq_for_preemption = 8, 8, 2
    for name, value in training.items():
        c.training[name] = value
    return c


def checkpoint_files(workdir):
    return {kind: snapshot(os.path.join(workdir, kind)) for kind in ("checkpoints", "checkpoints-meta")}


def restored(workdir, c):
    _, _, like = make_state(c)
    return Checkpointer(workdir).restore_latest(parallel.replicate(like, parallel.make_mesh()))


def test_a_nan_step_stops_the_run_before_a_checkpoint_holds_it(tmp_path, nan_batches):
    workdir = str(tmp_path)
    train(config(n_iters=4), workdir)  # good checkpoints at steps 2 and 4
    before = checkpoint_files(workdir)

    nan_batches({4})  # step 5 is bad; step 6 is a pre-emption checkpoint step, not a log step
    with pytest.raises(NonFiniteLossError, match=r"became NaN/inf at step 5; the run stopped before saving anything "
                                                 r"after it, so the newest checkpoint in .* is the last good one"):
        train(config(n_iters=16), workdir)
    assert checkpoint_files(workdir) == before
    state, step = restored(workdir, config())
    assert step == 4 and all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(state.params))


def test_skip_nonfinite_leaves_the_state_as_it_was_and_counts_the_step(tmp_path, nan_batches):
    workdir = str(tmp_path)
    nan_batches({4})
    train(config(n_iters=5, skip_nonfinite=True), workdir)  # checkpoints: pre-emption at 4, periodic at 5

    _, _, like = make_state(config())
    like = parallel.replicate(like, parallel.make_mesh())
    before = Checkpointer(workdir).restore(4, like, periodic=False)
    after = Checkpointer(workdir).restore(5, like)
    assert int(after.step) == 5 and not leaves_equal(after.rng, before.rng)  # step counter and rng move on ...
    for field in ("params", "ema_params", "opt_state"):  # ... the model and optimizer do not
        assert leaves_equal(getattr(after, field), getattr(before, field)), field

    train(config(n_iters=16, skip_nonfinite=True), workdir)  # resumed: the count lives in the checkpoint
    logs = {m["step"]: m for m in metrics(workdir) if "loss" in m}
    assert [logs[s]["nonfinite_steps"] for s in (8, 16)] == [1, 1]
    assert all(math.isfinite(m["loss"]) for m in logs.values())
