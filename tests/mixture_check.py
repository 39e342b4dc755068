"""The assertion the sampler tests share: samples reproduce the analytic mixture target."""
import numpy as np

from samplers.analytic import GaussianMixture

MC_SE = 5.0  # Monte-Carlo allowance: P(|N(0,1)| > 5) = 6e-7 per statistic, < 1e-5 over one test's 18


def assert_reproduces(gm: GaussianMixture, x, bias_se: float, context: str = ""):
    """Every weight, mean and covariance entry of x within (MC_SE + bias_se) standard errors of gm's.

    bias_se is the sampler's discretization bias at this sample size, in standard errors, as measured
    on many more samples (see the tables in the test files); a wrong sampler misses by far more.
    """
    x = np.asarray(x)
    assert np.all(np.isfinite(x)), f"{context}: non-finite samples"
    limit = MC_SE + bias_se
    for name, (error, se) in gm.moment_errors(x).items():
        z = np.max(np.abs(error) / se)
        assert z <= limit, f"{context}: {name} is off by {z:.1f} standard errors (limit {limit}): error {error}"
