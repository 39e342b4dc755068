"""The same score network's CPU step time here and in score_sde_pytorch, side by side in one run.

    python -m benchmarks.cpu_vs_pytorch --reference /path/to/score_sde_pytorch [--cases mnist,cifar10]

Cases: `mnist`, the first quickstart's network (configs/vp/ddpm_mnist_discrete.py: DDPM, 28x28x1, batch 32,
discrete-time DDPM loss; today's quickstart folds 2x2 patches, which score_sde_pytorch's DDPM cannot) and `cifar10`, DDPM++ (configs/vp/ddpmpp_cifar10_continuous.py, batch 8, continuous VP loss).
For each it prints the median seconds of a full train step (loss, backward, optimizer update, EMA) and of a
forward pass (train=False / torch.no_grad) on both sides, and the ratio r = t_here / t_pytorch.

The reference network is score_sde_pytorch's own (models/ddpm.py, models/ncsnpp.py), built from its
ml_collections config: ours, whose field names are score_sde's, plus `device = cpu`. Its train step is its own
losses.get_step_fn (DDPM loss or the continuous SDE loss, Adam with warmup and gradient clipping via
losses.optimization_manager) followed by its models/ema.py update, as run_lib.train does, without DataParallel.
One mapping is needed: score_sde_pytorch's DDPM hard-codes 32 GroupNorm groups, which the quickstart's 16
channels cannot divide, so every reference GroupNorm is built with our config's group rule G(C)
(layers.NORM_GROUPS; 'quarter_channels' is min(C // 4, 32), what its NCSN++ already uses).
score_sde_pytorch's `op` package compiles a CUDA extension when imported; a stub module stands in for it in
sys.modules before the reference is imported (DDPM++ with fir=False and DDPM never call upfirdn2d).

Both sides use random weights (timings do not depend on values); XLA:CPU's thread pool and, by default, torch's
intra-op threads are sized to the machine (`--torch_threads` sets torch's). Timing rounds alternate, `--iters` calls of one side
then the other, `--rounds` times, so a load change on a shared machine hits both sides alike; each median is
over all of a side's timed calls, after one untimed warm-up call (and XLA's compilation).

Measured (issue 18) on 2 CPU cores shared with other jobs (load average 4-8), torch 2.13.0+cpu, jax 0.10.2,
`--rounds 2-3 --iters 2-3`, seconds (medians) here / in score_sde_pytorch and their ratio, before and after
training.loop.CPU_TRAIN_OPTIONS (YNNPACK fusions for reductions only in compiled train steps; "before" is commit
b164697's code, XLA's default fusions, timed by this script):

    case                 what        before                 after                  torch threads
    mnist  (batch 32)    train step  0.319 / 0.212  1.51    0.300 / 0.216  1.39    1 (--torch_threads 1)
    mnist  (batch 32)    forward     0.090 / 0.083  1.08    0.083 / 0.070  1.19    1
    cifar10 (batch 8)    train step  10.57 / 7.650  1.38    8.767 / 7.706  1.14    1
    cifar10 (batch 8)    forward     2.364 / 2.138  1.11    2.378 / 2.165  1.10    1
    cifar10 (batch 8)    train step  11.42 / 43.53  0.26    8.600 / 43.32  0.20    2 (torch's default)
    cifar10 (batch 8)    forward     2.389 / 8.883  0.27    2.347 / 8.842  0.27    2

On this loaded machine torch's two OpenMP threads collapse (the quickstart step took 5.7-5.9 s with them in
three runs out of four, 0.13 s in one quiet one, 0.21 s with --torch_threads 1), so its 2-thread figures are far
from its best; ratios are comparable only within one run. Our own step, compiled both ways in one process and
timed alternately: quickstart 0.644 -> 0.518 s and 0.626 -> 0.508 s, DDPM++ 17.06 -> 12.94 s; forwards unchanged.

Tried and not kept (a 3x3 conv's weight gradient dW = P^T dy, 32 x 28 x 28 x 32 -> 16 and smaller, timed against
XLA's own in one process): im2col patches P (9 shifted slices concatenated) and one dot, 1.06-6.6x slower; nine
shifted dots, 2.2-5.4x slower; lax.conv_general_dilated_patches, slower still. XLA_FLAGS
--xla_cpu_experimental_onednn_custom_call, --xla_cpu_use_onednn and --xla_cpu_use_xnnpack made a single conv's
gradient slower here. YNNPACK off entirely ran convolutions fastest (the quickstart step's conv time 380 -> 62
op-ms in a profile) but its reductions (GroupNorm) 48 -> 214 op-ms, a slower step; reductions plus dots in
YNNPACK measured the same as reductions alone.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import statistics
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

import datasets
import models
import sde_lib
from benchmarks import common
from models import layers
from tasks import score as score_task
from training import state as training_state
from training import loop

#: name -> (our config, batch)
CASES = {"mnist": ("vp/ddpm_mnist_discrete", 32), "cifar10": ("vp/ddpmpp_cifar10_continuous", 8)}

#: Top-level names the reference shares with this repository; imported from it with these swapped out.
_SHARED_NAMES = ("models", "sde_lib", "losses", "op", "utils")


def _swap_modules(prefixes, replacement=None):
    """Remove sys.modules entries under `prefixes` and return them; install `replacement` (a dict) instead."""
    taken = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in prefixes}
    sys.modules.update(replacement or {})
    return taken


def import_reference(path: str):
    """score_sde_pytorch's (losses, sde_lib, models.utils, models.ema) modules from the checkout at `path`,
    imported with our same-named modules set aside and restored afterwards. `op` is a stub: the real one
    compiles a CUDA extension at import."""
    op = types.ModuleType("op")

    def upfirdn2d(*args, **kwargs):
        raise RuntimeError("benchmarks.cpu_vs_pytorch stubs score_sde_pytorch's op.upfirdn2d (FIR needs CUDA).")

    op.upfirdn2d = upfirdn2d
    ours = _swap_modules(_SHARED_NAMES, {"op": op})
    sys.path.insert(0, path)
    try:
        mods = [importlib.import_module(n) for n in ("losses", "sde_lib", "models.utils", "models.ema",
                                                      "models.ddpm", "models.ncsnpp")]
    finally:
        sys.path.remove(path)
        _swap_modules(_SHARED_NAMES, ours)
    return mods[:4]


def reference_config(config):
    """Our config as score_sde_pytorch reads it (same field names) with device = cpu."""
    import torch
    ref = config.copy_and_resolve_references()
    ref.unlock()
    ref.device = torch.device("cpu")
    return ref


@contextlib.contextmanager
def group_norm_rule(rule: str):
    """While open, torch.nn.GroupNorm(num_groups, C, ...) builds NORM_GROUPS[rule](C) groups instead."""
    import torch
    cls = torch.nn.GroupNorm

    def regrouped(num_groups, num_channels, *args, **kwargs):
        return cls(layers.NORM_GROUPS[rule](num_channels), num_channels, *args, **kwargs)

    torch.nn.GroupNorm = regrouped
    try:
        yield
    finally:
        torch.nn.GroupNorm = cls


def reference_side(ref, config, x: np.ndarray, labels: np.ndarray):
    """(train_step(), forward()) callables of score_sde_pytorch's network and step on the batch x (NHWC)."""
    import torch
    losses, ref_sde_lib, mutils, ema = ref
    rc = reference_config(config)
    with group_norm_rule(layers.norm_groups(config)):
        model = mutils.get_model(rc.model.name)(rc)
    optimizer = losses.get_optimizer(rc, model.parameters())
    state = dict(optimizer=optimizer, model=model, step=0,
                 ema=ema.ExponentialMovingAverage(model.parameters(), decay=rc.model.ema_rate))
    m = rc.model
    sde = ref_sde_lib.VPSDE(beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales)
    t = rc.training
    step_fn = losses.get_step_fn(sde, train=True, optimize_fn=losses.optimization_manager(rc),
                                 reduce_mean=t.reduce_mean, continuous=t.continuous,
                                 likelihood_weighting=t.likelihood_weighting)
    batch = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    time_cond = torch.from_numpy(labels)

    def forward():
        model.eval()
        with torch.no_grad():
            model(batch, time_cond)

    return (lambda: step_fn(state, batch)), forward


def our_side(config, x: np.ndarray, labels: np.ndarray):
    """(train_step(), forward()) callables of this framework's train step, compiled as `--mode train` compiles
    it (training.loop.fuse_steps, one step per call, donated state), and its forward pass."""
    model = models.get_model(config)
    optimizer = training_state.get_optimizer(config.optim)
    step = loop.fuse_steps(score_task.step_fn_from_config(config, sde_lib.from_config(config), model, train=True,
                                                          optimizer=optimizer, scaler=datasets.get_data_scaler(config)),
                           donate=True)
    holder = [training_state.create_train_state(jax.random.PRNGKey(0), common.random_variables(config), optimizer)]
    batch = {"image": jnp.asarray(x)[None]}
    forward = jax.jit(lambda v, x, t: model.apply(v, x, t, train=False))
    xj, tj = jnp.asarray(x), jnp.asarray(labels)

    def train_step():
        holder[0], losses = step(holder[0], batch, None)
        losses.block_until_ready()

    return train_step, lambda: forward(holder[0].variables, xj, tj).block_until_ready()


def alternate(fns: dict, rounds: int, iters: int) -> dict:
    """Median seconds per call of each fn, timed in alternating rounds of `iters` calls after one warm-up."""
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            for _ in range(iters):
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def run_case(ref, name: str, rounds: int, iters: int):
    config_name, batch = CASES[name]
    config = common.load_config(config_name)
    config.training.batch_size = batch
    d = config.data
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch, d.image_size, d.image_size, d.num_channels)).astype(np.float32)
    labels = (rng.integers(0, config.model.num_scales, size=batch) if not config.training.continuous
              else rng.uniform(1e-3, 1.0, size=batch) * 999).astype(np.float32)
    ours_train, ours_forward = our_side(config, x, labels)
    ref_train, ref_forward = reference_side(ref, config, x, labels)
    train = alternate({"here": ours_train, "pytorch": ref_train}, rounds, iters)
    forward = alternate({"here": ours_forward, "pytorch": ref_forward}, rounds, iters)
    for what, m in (("train step", train), ("forward", forward)):
        print(f"{name:>8} {batch:>5} {what:>10} {m['here']:>9.3f} {m['pytorch']:>9.3f} "
              f"{m['here'] / m['pytorch']:>6.2f}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", help="a score_sde_pytorch checkout (the folder holding models/, losses.py)")
    parser.add_argument("--cases", default="mnist,cifar10", help=f"comma-separated, of {sorted(CASES)}")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    parser.add_argument("--iters", type=int, default=3, help="timed calls per side per round")
    parser.add_argument("--torch_threads", type=int, help="torch.set_num_threads(this); default: torch's own")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        sys.exit("benchmarks/cpu_vs_pytorch.py needs PyTorch (torch) installed to run score_sde_pytorch.")
    if not args.reference or not os.path.isfile(os.path.join(args.reference, "models", "ncsnpp.py")):
        sys.exit("Give --reference, the path of a score_sde_pytorch checkout (the folder holding models/ncsnpp.py).")
    cases = args.cases.split(",")
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        sys.exit(f"Unknown case(s) {unknown}; choose from {sorted(CASES)}.")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    ref = import_reference(os.path.abspath(args.reference))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads | jax {jax.__version__}, "
          f"devices {jax.devices()} | XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} | "
          f"train-step compiler options {loop.train_compiler_options()}")
    print(f"{'case':>8} {'batch':>5} {'what':>10} {'here_s':>9} {'torch_s':>9} {'ratio':>6}")
    for name in cases:
        run_case(ref, name, args.rounds, args.iters)


if __name__ == "__main__":
    main()
