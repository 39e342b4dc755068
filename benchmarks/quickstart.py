"""Time the README's first command end to end and print what it achieved.

    python benchmarks/quickstart.py [--workdir runs/quickstart_bench] [extra --config.* overrides]

Runs `main.py --config configs/vp/ddpm_mnist.py --mode train` in a fresh workdir
(as a new user would), then prints wall time, steps, median images/s over the
logged windows, the last train and eval losses, and the sample grid it wrote.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(REPO, "runs", "quickstart_bench"))
    args, overrides = parser.parse_known_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    command = [sys.executable, "main.py", "--config", "configs/vp/ddpm_mnist.py", "--mode", "train",
               "--workdir", args.workdir, *overrides]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True)
    wall = time.perf_counter() - start

    with open(os.path.join(args.workdir, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f]
    train = [m for m in metrics if "loss" in m]
    evals = [m for m in metrics if "eval_loss" in m]
    grids = sorted(glob.glob(os.path.join(args.workdir, "samples", "*.png")))
    print(f"command          : {' '.join(command[1:])}")
    print(f"wall time        : {wall:.0f} s ({wall / 60:.1f} min), including compilation and sampling")
    print(f"steps            : {train[-1]['step']}")
    print(f"images/s (median): {statistics.median(m['images_per_sec'] for m in train[1:] or train):.0f}")
    print(f"final train loss : {train[-1]['loss']:.4f} (first logged {train[0]['loss']:.4f})")
    print(f"final eval loss  : {evals[-1]['eval_loss']:.4f}" if evals else "final eval loss  : none logged")
    print(f"sample grid      : {grids[-1] if grids else 'none written'}")


if __name__ == "__main__":
    main()
