"""Sample error against score evaluations for every sampler, on the analytic 2-D mixture target.

    python -m benchmarks.samplers [--n 20000] [--seeds 3] [--nfe 10 20 50 100 1000] [--sdes vp ve]

For each SDE and sampler, at each NFE budget (score evaluations per sample, the final denoising
evaluation included; each sampler takes the most steps that fit), prints the sliced 2-Wasserstein
distance between n samples and the mixture (samplers/analytic.py), represented by 10 n exact
samples, as the median over seeds. 'floor' is the same distance for n exact samples (median and
range over 10 seeds): the Monte-Carlo noise of n samples, below which no sampler can be told apart
from exact. It is mostly the mixture weights' noise (mass moved across the gaps between modes),
so it is heavy-tailed. The adaptive ODE solver picks its own NFE, so it gets one row per
tolerance, with the NFE it used. 'pc-1000' is the predictor-corrector sampler of Song et al. 2021
(reverse diffusion + Langevin, N = 1000, 2000 NFE), the reference the fast solvers are meant to match.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

if __name__ == "__main__" and not __package__:  # run as a file: the repo root, not benchmarks/, goes first
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import samplers  # noqa: E402
import sde_lib  # noqa: E402
from samplers.analytic import benchmark_mixture  # noqa: E402

SDES = {"vp": sde_lib.VPSDE, "subvp": sde_lib.subVPSDE, "ve": sde_lib.VESDE}

# name -> (sampler, options at an NFE budget, or None where the budget is too small)
FIXED_STEP = {
    "pc em": ("pc", lambda nfe: dict(predictor="euler_maruyama", corrector="none", num_steps=nfe)),
    "pc em+langevin": ("pc", lambda nfe: dict(predictor="euler_maruyama", num_steps=nfe // 2)),
    "ddim eta=0": ("ddim", lambda nfe: dict(num_steps=nfe - 1)),
    "ddim eta=1": ("ddim", lambda nfe: dict(num_steps=nfe - 1, eta=1.0)),
    "dpm_solver++ 2M": ("dpm_solver", lambda nfe: dict(num_steps=nfe - 1)),
    "heun (edm)": ("heun", lambda nfe: dict(num_steps=(nfe - 1) // 2)),
}
ODE_TOLERANCES = (1e-2, 1e-3, 1e-4, 1e-5)


def sliced_wasserstein(x, reference_quantiles, directions):
    """SW_2 = sqrt(mean over unit directions v of W_2^2(v.x, reference)): 1-D W_2 between the sorted
    projections of x and the reference's quantiles at the same levels (i - 1/2) / n."""
    return float(jnp.sqrt(jnp.mean((jnp.sort(x @ directions.T, axis=0) - reference_quantiles) ** 2)))


def reference_quantiles(reference, n, directions):
    """Quantiles of each projection of the (larger) reference set at the levels (i - 1/2) / n, i = 1..n."""
    projected = jnp.sort(reference @ directions.T, axis=0)
    return projected[((jnp.arange(n) + 0.5) * len(reference) / n).astype(jnp.int32)]


def measure(sampler, score_fn, quantiles, directions, seeds):
    """(median SW_2 over seeds, nfe, seconds per run after compiling)."""
    run = jax.jit(lambda rng: sampler(rng, score_fn)).lower(jax.random.PRNGKey(0)).compile()
    start, errors = time.time(), []
    for seed in range(seeds):
        x, nfe = run(jax.random.PRNGKey(1000 + seed))
        errors.append(sliced_wasserstein(x, quantiles, directions))
    return float(np.median(errors)), int(nfe), (time.time() - start) / seeds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="samples per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50, 100, 1000])
    parser.add_argument("--sdes", nargs="+", default=["vp", "ve"], choices=sorted(SDES))
    args = parser.parse_args(argv)
    gm = benchmark_mixture()
    rng = jax.random.PRNGKey(42)
    directions = jax.random.normal(rng, (256, gm.dim))
    directions = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
    quantiles = reference_quantiles(gm.sample(jax.random.fold_in(rng, 0), 10 * args.n)[0], args.n, directions)
    floor = [sliced_wasserstein(gm.sample(jax.random.fold_in(rng, 1 + s), args.n)[0], quantiles, directions)
             for s in range(10)]
    shape = (args.n, gm.dim)
    for sde_name in args.sdes:
        sde = SDES[sde_name]()
        score_fn = gm.score_fn(sde)
        print(f"\n{sde_name.upper()}: sliced W2 to the mixture (n = {args.n}, median of {args.seeds} seeds; NFE used); "
              f"floor of exact samples {np.median(floor):.4f} (range {min(floor):.4f}-{max(floor):.4f})")
        print(f"{'sampler':18s}" + "".join(f"{'NFE ' + str(b):>16s}" for b in args.nfe))
        for name, (method, options) in FIXED_STEP.items():
            cells = []
            for budget in args.nfe:
                opts = options(budget)
                if opts.get("num_steps", 1) < 1:
                    cells.append(f"{'-':>16s}")
                    continue
                error, nfe, _ = measure(samplers.get_sampler(method, sde, shape, **opts), score_fn, quantiles, directions,
                                        args.seeds)
                cells.append(f"{error:9.4f} ({nfe:4d})")
            print(f"{name:18s}" + "".join(cells), flush=True)
        cells = []
        for tol in ODE_TOLERANCES:
            error, nfe, _ = measure(samplers.get_sampler("ode", sde, shape, rtol=tol, atol=tol), score_fn, quantiles,
                                    directions, args.seeds)
            cells.append(f"tol {tol:.0e}: {error:.4f} ({nfe})")
        print(f"{'ode dopri5':18s}" + "   ".join(cells), flush=True)
        error, nfe, seconds = measure(samplers.get_sampler("pc", sde, shape), score_fn, quantiles, directions, args.seeds)
        print(f"{'pc-1000':18s}reverse_diffusion + langevin: {error:.4f} ({nfe} NFE, {seconds:.1f} s per run)")


if __name__ == "__main__":
    main()
