"""Atomic file writes (a kill leaves the whole file or none of it) and the digests that name contents.

A file is written under a temporary name in its folder and renamed; os.replace is atomic on POSIX.
Digests are the first 16 hex digits of sha256: of a JSON-serialisable object (settings), of a file's
bytes (weight files), or of a pytree's leaves (parameters). The checkpoints' own per-leaf checksums,
computed on the device, are training/checkpoint.py's.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile

import jax
import numpy as np


def _atomic_write(path: str, write) -> None:
    """write(binary file) to a temporary file beside `path`, then rename it to `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_savez(path: str, **arrays) -> None:
    """np.savez(path, **arrays), atomically."""
    _atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_text(path: str, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def json_digest(obj) -> str:
    """A short stable hash of a JSON-serialisable object (config fields, steps, names)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str) -> str:
    """sha256 (first 16 hex digits) of a file's bytes: identifies a set of network weights."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def tree_digest(tree) -> str:
    """sha256 (first 16 hex digits) of every leaf's bytes, in tree order: identifies a set of parameters."""
    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()[:16]
