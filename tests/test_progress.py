"""The sampling progress bar counts exactly the network evaluations a compiled sampler makes."""
import jax
import jax.numpy as jnp
import pytest

import samplers
import sde_lib
from training.progress import EvaluationProgress


@pytest.mark.parametrize("method, options", [("ddim", {"num_steps": 7}), ("pc", {"num_steps": 20})])
def test_counted_evaluations_are_the_samplers_nfe(method, options):
    sde = sde_lib.VPSDE(N=20)
    sampler = samplers.get_sampler(method, sde, (3, 2), **options)
    progress = EvaluationProgress("test")

    @jax.jit
    def run(rng):
        return sampler(rng, progress.count(lambda x, t: -x))

    for call in range(2):  # the second call's bar starts from the first call's count as its total
        _, nfe = progress.run(run, jax.random.PRNGKey(call))
        assert progress.total == int(nfe) > 0
