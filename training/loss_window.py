"""The loop's per-step losses: averaged per log window, checked for NaN/inf before anything is saved.

A train step (training.state.apply_gradients) never applies a non-finite update and reports
such a step's loss as NaN. The losses stay on the device until the loop needs
them, at a log step or before a checkpoint, so the host does not wait on the
device every step, yet no checkpoint is written before every step in it has
been checked. A non-finite step then raises NonFiniteLossError naming it, or,
with config.training.skip_nonfinite, is counted (`nonfinite_steps`) and left
out of the logged mean.

The open window (its first step, the losses checked so far, the count) is
saved with each checkpoint, so a run resumed at any step logs exactly the
averages an uninterrupted run logs.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss or gradient."""


class LossWindow:
    def __init__(self, start_step: int, skip_nonfinite: bool, workdir: str, saved: dict | None = None):
        """`start_step`: the step the window opens at (losses follow it); `saved`: a `to_json()` to resume."""
        saved = saved or {}
        self.skip_nonfinite, self.workdir = skip_nonfinite, workdir
        self.start_step = int(saved.get("window_start", start_step))
        self._checked = [float(v) for v in saved.get("window_losses", [])]
        self.nonfinite_steps = int(saved.get("nonfinite_steps", 0))
        self._pending = []

    def add(self, losses) -> None:
        """Per-step losses of one compiled call (a device array of shape (n_jitted_steps,))."""
        self._pending.append(losses)

    def check(self) -> None:
        """Fetch the pending losses; raise NonFiniteLossError at the first non-finite one unless skipping."""
        if not self._pending:
            return
        fetched = np.asarray(jnp.concatenate(self._pending), np.float64)
        self._pending = []
        bad = np.flatnonzero(~np.isfinite(fetched))
        if len(bad) and not self.skip_nonfinite:
            step = self.start_step + len(self._checked) + int(bad[0]) + 1
            raise NonFiniteLossError(
                f"The training loss or a gradient became NaN/inf at step {step}; the run stopped before saving "
                f"anything after it, so the newest checkpoint in {self.workdir} is the last good one. Lower "
                f"config.optim.lr or check the data (or set config.training.skip_nonfinite=True to skip such steps).")
        self.nonfinite_steps += len(bad)
        self._checked.extend(fetched.tolist())

    def close(self, step: int) -> float:
        """Check, and return the mean loss over the window's finite steps (NaN if none); the next window opens."""
        self.check()
        finite = [v for v in self._checked if np.isfinite(v)]
        self.start_step, self._checked = step, []
        return float(np.mean(finite)) if finite else float("nan")

    def to_json(self) -> dict:
        """The window as saved with a checkpoint; call check() first."""
        if self._pending:
            raise RuntimeError("LossWindow.to_json() needs check() first.")
        return {"window_start": self.start_step, "window_losses": self._checked,
                "nonfinite_steps": self.nonfinite_steps}
