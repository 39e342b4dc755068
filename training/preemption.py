"""SIGTERM, what schedulers send before SIGKILL: finish the compiled call, save the pre-emption checkpoint, stop.

`StopRequests()` installs the handler until `.close()`; the loop polls
`.requested` after each compiled call, then saves and raises Preempted, which
main.py turns into exit status 128 + signal (143 for SIGTERM) so that a
scheduler requeues the job. Only a single-process run listens: hosts that each
got the signal at a different step would disagree on when to save, so a
multi-host run keeps the default (it dies, and resumes from the newest
checkpoint as after a SIGKILL).
"""
from __future__ import annotations

import signal
import threading

import jax


class Preempted(Exception):
    """The run stopped on a signal after saving a checkpoint."""

    def __init__(self, signum: int, step: int, workdir: str):
        self.signum, self.step = signum, step
        super().__init__(f"Stopped by {signal.Signals(signum).name} at step {step} after saving a pre-emption "
                         f"checkpoint in {workdir}; rerun the same command to resume.")


class StopRequests:
    """Records the first of `signals` to arrive (`.signum`) instead of dying of it, until `.close()`."""

    def __init__(self, signals=(signal.SIGTERM,)):
        self.signum = None
        listen = jax.process_count() == 1 and threading.current_thread() is threading.main_thread()
        self._previous = {s: signal.signal(s, self._handle) for s in signals} if listen else {}

    def _handle(self, signum, frame):
        self.signum = self.signum or signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def close(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
