"""`--mode import`: a score_sde_pytorch checkpoint becomes a periodic checkpoint of this framework's train state.

    python main.py --config configs/ve/ncsnpp_cifar10_continuous.py --mode import --workdir W \\
        --config.import_from=checkpoint_26.pth

converts the file with models.score_sde_import.load_checkpoint and writes W/checkpoints/<step>, the one
TrainState every mode restores:

    step = the reference's 'step',  params = its 'model' weights,  ema_params = its EMA ('shadow_params'),
    opt_state = a fresh config.optim state,  model_state = the non-trained variables (Fourier frequencies),
    rng = the second key of PRNGKey(config.seed), as a fresh run's.

`--mode sample` and `--mode eval` then use the EMA weights unchanged (eval's checkpoint k is step
k * config.training.snapshot_freq: score_sde's checkpoint_26.pth of CIFAR-10 holds step 26 * 50000), and
`--mode train` continues from it with fresh Adam moments. A file of another architecture (the first differing
parameter is named), a truncated file, a pickle naming objects other than tensors and plain containers
(refused before any of it runs) and a workdir that already holds checkpoints are refused in one line before
anything is written.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from absl import logging

from models import score_sde_import
from training import parallel
from training.checkpoint import Checkpointer, periodic_steps
from training.state import create_train_state, get_optimizer
from training.validation import ConfigError


def imported_state(config, imported: score_sde_import.Imported):
    """The TrainState of an imported checkpoint (see the module docstring), on the host."""
    _, state_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed), 3)  # tasks.score.init_state's rng
    state = create_train_state(state_rng, imported.variables, get_optimizer(config.optim))
    return state.replace(step=jnp.asarray(imported.step, jnp.int32),
                         ema_params=jax.tree_util.tree_map(jnp.asarray, imported.ema_variables["params"]))


def import_checkpoint(config, workdir: str) -> int:
    """Run `--mode import`; returns the step of the checkpoint written."""
    path = config.import_from
    if not path:
        raise ConfigError("--mode import needs --config.import_from=<a score_sde_pytorch checkpoint .pth>.")
    folder, steps = periodic_steps(workdir)
    if steps:
        raise ConfigError(f"{folder} already holds the checkpoints {steps}; import into an empty --workdir.")
    imported = score_sde_import.load_checkpoint(path, config)
    if imported.ema_decay != config.model.ema_rate:
        logging.warning("%s was trained with EMA decay %g; config.model.ema_rate is %g (used if training resumes).",
                        path, imported.ema_decay, config.model.ema_rate)
    state = jax.device_put(imported_state(config, imported), parallel.replicated(parallel.make_mesh()))
    with Checkpointer(workdir) as checkpointer:
        checkpointer.save(imported.step, state, periodic=True,
                          meta={"imported_from": os.path.abspath(path), "ema_decay": imported.ema_decay})
        checkpointer.wait()
    logging.info("Imported %s (step %d) into %s; sample or evaluate it with --mode sample / eval (eval: checkpoint "
                 "k = step / config.training.snapshot_freq).", path, imported.step, folder)
    return imported.step
