"""Train the tiny digits config in a fresh process and print a digest of the parameters it ends with.

    python tests/train_worker.py WORKDIR N_ITERS [section.field=value ...]

Used by tests that need their own device count (XLA_FLAGS) or several processes (JAX_NUM_PROCESSES ...).
Prints one JSON line: {"process": i, "devices": n, "step": s, "params_sha256": ..., "param_sum": ...}.
"""
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from training import parallel  # noqa: E402
from helpers import tiny_config  # noqa: E402
from modes.train import train  # noqa: E402


def local_params(state):
    """This process's copy of the (replicated) parameters as numpy arrays."""
    return [np.asarray(leaf.addressable_data(0)) for leaf in jax.tree_util.tree_leaves(state.params)]


if __name__ == "__main__":
    parallel.initialize_distributed()
    config = tiny_config()
    config.training.n_iters = int(sys.argv[2])
    for override in sys.argv[3:]:
        section, rest = override.split(".", 1)
        field, value = rest.split("=", 1)
        config[section][field] = type(config[section][field])(value)
    state = train(config, sys.argv[1])
    params = local_params(state)
    print(json.dumps({"process": jax.process_index(), "devices": jax.device_count(), "step": int(state.step),
                      "params_sha256": hashlib.sha256(b"".join(p.tobytes() for p in params)).hexdigest(),
                      "param_sum": float(sum(np.float64(p).sum() for p in params))}))
