"""The end of a conditioned `--mode sample` (modes/concat_sample.py, modes/controlnet_sample.py): the name of
what it writes and the two files, W/<eval_folder>/<name>.npz (samples and conditions as uint8, and the run's
other arrays) and <name>.png (a labelled row per condition: condition | its samples | reference, when given).

    name = <prefix>_step<step>_<method>[_<tag>...][_cfg_w<w>]
"""
from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging

import datasets
from training.writers import condition_rows, save_labelled_grid


def guided(sampling, sep: str = "_") -> str:
    """'' without guidance; with 'cfg' the weight, as '_cfg_w<w>' (sep '_', file names) or ' cfg w=<w>' (' ')."""
    if sampling.guidance != "cfg":
        return ""
    return f"_cfg_w{sampling.guidance_weight:g}" if sep == "_" else f" cfg w={sampling.guidance_weight:g}"


def sample_name(prefix: str, step: int, sampling, *tags: str) -> str:
    """<prefix>_step<step>_<method>[_<tag>...][_cfg_w<w>] (module docstring)."""
    return f"{prefix}_step{step}_{sampling.method}" + "".join(f"_{t}" for t in tags) + guided(sampling)


def write(folder: str, name: str, images, condition, shown, row_names, caption: str, reference=None,
          **arrays) -> str:
    """Write folder/name.npz (image = uint8 samples (R n, H, W, C), condition = uint8 conditions, `arrays`) and
    folder/name.png (row r, labelled row_names[r]: shown[r] | its n samples | reference[r] when given), on process
    0 only; returns the .npz path."""
    path = os.path.join(folder, name + ".npz")
    if jax.process_index() != 0:
        return path
    os.makedirs(folder, exist_ok=True)
    np.savez_compressed(path, image=datasets.to_uint8(images), condition=datasets.to_uint8(condition), **arrays)
    per_row = len(images) // len(shown) + 1 + (reference is not None)
    save_labelled_grid(condition_rows(shown, images, reference), os.path.join(folder, name + ".png"), per_row,
                       row_names, caption)
    logging.info("Samples written to %s (.npz and .png).", os.path.join(folder, name))
    return path
