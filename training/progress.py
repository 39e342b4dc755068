"""Progress of the work inside one compiled program: a sampler's whole loop is a single XLA call, so the host
counts the network evaluations as the device makes them (jax.debug.callback, one per call of the score function)
and shows them as a bar. The total of a call is the count of the previous call of the same sampler (unknown on
the first), so from the second call on the bar also gives the time left.
"""
from __future__ import annotations

import jax
from tqdm import tqdm


class EvaluationProgress:
    """count(score_fn) -> score_fn that ticks the bar at every evaluation; run(fn, *args) calls a jitted fn built
    on such score functions under a bar and waits for its result."""

    def __init__(self, desc: str = "sample"):
        self.desc, self.total, self._bar = desc, None, None

    def count(self, score_fn):
        def counted(x, t):
            jax.debug.callback(self._tick)
            return score_fn(x, t)

        return counted

    def _tick(self):
        if self._bar is not None:
            self._bar.update(1)

    def run(self, fn, *args, **kwargs):
        self._bar = tqdm(total=self.total, desc=self.desc, unit="eval", leave=False, dynamic_ncols=True,
                         disable=jax.process_index() != 0)
        try:
            out = jax.block_until_ready(fn(*args, **kwargs))
            self.total = self._bar.n or self.total
            return out
        finally:
            self._bar.close()
            self._bar = None
