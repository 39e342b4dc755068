"""What a run writes besides checkpoints: TensorBoard scalars, a plain metrics log, image grids."""
from __future__ import annotations

import json
import math
import os

import jax
import numpy as np

import datasets
from training.files import atomic_write_text


def image_grid(images: np.ndarray, padding: int = 2, nrow: int | None = None) -> np.ndarray:
    """(N, H, W, C) floats in [0, 1] -> one uint8 (rows*(H+p)+p, cols*(W+p)+p, C) grid, row-major."""
    n, h, w, c = images.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding, c), np.uint8)
    pixels = datasets.to_uint8(images)
    for k in range(n):
        r, q = divmod(k, cols)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        grid[y:y + h, x:x + w] = pixels[k]
    return grid


def condition_rows(shown: np.ndarray, samples: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Grid images of R rows, each: shown[r] (the condition as an image) | its samples | reference[r] (when
    given); samples (R n, H, W, C), row r's n = len(samples) / R consecutive."""
    samples = np.asarray(samples, np.float32)
    samples = samples.reshape(len(shown), -1, *samples.shape[1:])
    parts = [np.asarray(shown, np.float32)[:, None], samples]
    parts += [] if reference is None else [np.asarray(reference, np.float32)[:, None]]
    return np.concatenate(parts, axis=1).reshape(-1, *samples.shape[2:])


def save_image_grid(images: np.ndarray, path: str, nrow: int | None = None) -> None:
    """Write images (N, H, W, C) in [0, 1] as one PNG grid."""
    from PIL import Image

    grid = image_grid(images, nrow=nrow)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    Image.fromarray(grid.squeeze(-1) if grid.shape[-1] == 1 else grid).save(path)


def _drop_records_after(path: str, step: int) -> None:
    """Rewrite the metrics log (atomically) without the records of steps > `step` and any torn last line."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
            except (ValueError, KeyError, TypeError):
                continue
    atomic_write_text(path, "".join(kept))


def save_labelled_grid(images: np.ndarray, path: str, nrow: int, row_labels, caption: str = "") -> None:
    """Write images (N, H, W, C) in [0, 1], nrow a row, as one PNG with a label left of each row and a caption
    above; small images are enlarged (nearest neighbour) so that a row is at least 16 pixels high."""
    from PIL import Image, ImageDraw, ImageFont

    grid = image_grid(images, nrow=nrow)
    grid = np.repeat(grid, 3, axis=-1) if grid.shape[-1] == 1 else grid
    row_pitch = images.shape[1] + 2
    zoom = max(1, math.ceil(16 / row_pitch))
    grid = np.kron(grid, np.ones((zoom, zoom, 1), np.uint8))
    font = ImageFont.load_default()
    margin = 6 + max([int(font.getlength(str(label))) for label in row_labels] + [0])
    top = 16 if caption else 0
    width = max(grid.shape[1] + margin, int(font.getlength(caption)) + 4)
    canvas = Image.new("RGB", (width, grid.shape[0] + top), "white")
    canvas.paste(Image.fromarray(grid), (margin, top))
    draw = ImageDraw.Draw(canvas)
    if caption:
        draw.text((2, 2), caption, fill="black", font=font)
    for r, label in enumerate(row_labels):
        draw.text((2, top + (2 + r * row_pitch + images.shape[1] // 2) * zoom - 5), str(label), fill="black", font=font)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    canvas.save(path)


class MetricWriter:
    """Scalars to TensorBoard (workdir/tensorboard) and to workdir/metrics.jsonl; only process 0 writes.

    `resume_step`: the training loop's start step (0 on a fresh start). It first forgets what an earlier,
    killed run logged after that step (TensorBoard's purge_step, and a rewrite of metrics.jsonl), so each
    step is recorded once, with this run's values. None (other writers) only appends.
    """

    def __init__(self, workdir: str, resume_step: int | None = None):
        self.active = jax.process_index() == 0
        if not self.active:
            return
        from tensorboardX import SummaryWriter

        path = os.path.join(workdir, "metrics.jsonl")
        if resume_step is not None:
            _drop_records_after(path, resume_step)
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                                 purge_step=None if resume_step is None else resume_step + 1)
        self._log = open(path, "a")

    def write(self, step: int, **scalars: float) -> None:
        if not self.active:
            return
        for name, value in scalars.items():
            self._tb.add_scalar(name, value, step)
        self._log.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
        self._log.flush()

    def close(self) -> None:
        if self.active:
            self._tb.close()
            self._log.close()
