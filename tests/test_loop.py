"""The loop's contract on a task of its own (not a score model): frozen parameters are passed to every step but
are neither trained, nor in the optimizer state, nor saved; each checkpoint records what they were; a run
resumed against other frozen parameters is refused; resuming gives the uninterrupted result."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import datasets
from data_sources import ArraySource
from training import loop, parallel
from training.checkpoint import Checkpointer, abstract_like
from training.state import TrainState, apply_gradients, create_train_state
from training.validation import ConfigError


class FrozenFeatureRegression:
    """Least squares of the label on w . tanh(A x): A (the 'encoder') is frozen, w is trained."""

    augment, eval_data = False, None

    def __init__(self, workdir, n_iters, frozen_seed=0):
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (64, 2, 2, 1), dtype=np.uint8)
        self.train_data = datasets.Dataset(ArraySource(images, (images.reshape(64, -1).sum(1) % 7).astype(np.int32)))
        self.workdir = workdir
        self.schedule = loop.Schedule(batch_size=8, n_iters=n_iters, log_freq=2, snapshot_freq=4,
                                      snapshot_freq_for_preemption=2)
        self.frozen = {"A": jax.random.normal(jax.random.PRNGKey(frozen_seed), (4, 3))}
        self.frozen_record = {"encoder": f"seed {frozen_seed}"}
        self.optimizer = optax.adam(1e-2)
        self.learning_rate = lambda step: 1e-2
        self.snapshots = []

    def init_state(self):
        return create_train_state(jax.random.PRNGKey(1), {"params": {"w": jnp.zeros(3)}}, self.optimizer)

    def train_step(self, state: TrainState, batch, frozen):
        rng, _ = jax.random.split(state.rng)

        def loss_fn(params):
            features = jnp.tanh(batch["image"].reshape(batch["image"].shape[0], -1) @ frozen["A"])
            return jnp.mean((features @ params["w"] - batch["label"] / 7.0) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return apply_gradients(state, loss, grads, self.optimizer, rng, ema_rate=0.5)

    def snapshot(self, state, step):
        self.snapshots.append(step)

    def finish(self, state):
        pass


def test_frozen_parameters_are_used_not_trained_nor_saved(tmp_path):
    task = FrozenFeatureRegression(str(tmp_path / "run"), n_iters=8)
    state = loop.train(task)
    assert task.snapshots == [4, 8]
    # only w is trained: the optimizer state has w's moments and nothing of A's shape
    assert {leaf.shape for leaf in jax.tree_util.tree_leaves(state.opt_state)} <= {(), (3,)}
    assert float(jnp.abs(state.params["w"]).sum()) > 0
    # the checkpoint holds the train state alone, and names the frozen parameters it was trained against
    with Checkpointer(task.workdir) as checkpointer:
        restored = checkpointer.latest(abstract_like(task.init_state, parallel.make_mesh()))
    assert restored.meta["frozen"] == {"encoder": "seed 0"}
    assert {leaf.shape for leaf in jax.tree_util.tree_leaves(restored.state)} <= {(), (2,), (3,)}


def test_resume_equals_the_uninterrupted_run_and_refuses_other_frozen_parameters(tmp_path):
    straight = loop.train(FrozenFeatureRegression(str(tmp_path / "straight"), n_iters=8))
    loop.train(FrozenFeatureRegression(str(tmp_path / "resumed"), n_iters=6))
    resumed = loop.train(FrozenFeatureRegression(str(tmp_path / "resumed"), n_iters=8))
    for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ConfigError, match=r'trained against \{"encoder": "seed 0"\} but this run\'s config gives '
                                          r'\{"encoder": "seed 1"\}'):
        loop.train(FrozenFeatureRegression(str(tmp_path / "resumed"), n_iters=10, frozen_seed=1))
