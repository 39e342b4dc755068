"""Work split in rounds that survives pre-emption: each finished round is one .npz, written atomically.

Files are written atomically (training/files.py), so a kill leaves either the whole file or none of
it. A rerun loads the rounds an earlier run finished and
computes only the others: a kill costs at most the round in progress.

Each round file carries a `key` naming everything its content depends on (config fields, checkpoint step,
feature network); a file whose key differs (the config changed since) is computed again, never reused.
Only process 0 writes; which rounds are done is decided by process 0 and broadcast, so every process of a
multi-host run takes part in the same compiled calls.
"""
from __future__ import annotations

import os
import zipfile

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from tqdm import tqdm

from training.files import atomic_savez


def load_round(path: str, key: str) -> dict[str, np.ndarray] | None:
    """The arrays of a finished round file made under `key`, or None (absent, unreadable or another key)."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        logging.warning("%s is unreadable; computing that round again.", path)
        return None
    if str(arrays.pop("key", "")) != key:
        logging.warning("%s was made with other settings; computing that round again.", path)
        return None
    return arrays


def run_rounds(folder: str, prefix: str, num_rounds: int, key: str, compute, desc: str) -> list[dict]:
    """[arrays of round r for r < num_rounds]: loaded from folder/<prefix>_<r>.npz when an earlier run
    finished it under the same key, else compute(r) -> {name: array}, written there before the next round.

    On processes other than 0 nothing is read or written, and rounds that process 0 had finished are None.
    """
    is_chief = jax.process_index() == 0
    paths = [os.path.join(folder, f"{prefix}_{r:05d}.npz") for r in range(num_rounds)]
    loaded = [load_round(p, key) for p in paths] if is_chief else [None] * num_rounds
    done = np.asarray([a is not None for a in loaded])
    done = np.asarray(multihost_utils.broadcast_one_to_all(done)) if jax.process_count() > 1 else done
    if done.any():
        logging.info("%s: %d of %d rounds already in %s.", desc, int(done.sum()), num_rounds, folder)
    results = []
    for r in tqdm(range(num_rounds), desc=desc, unit="round", initial=0, disable=not is_chief, dynamic_ncols=True):
        if done[r]:
            results.append(loaded[r])
            continue
        arrays = {k: np.asarray(v) for k, v in compute(r).items()}
        if is_chief:
            atomic_savez(paths[r], key=np.asarray(key), **arrays)
        results.append(arrays)
    return results
