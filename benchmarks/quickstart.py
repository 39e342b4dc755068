"""Time the README's first command end to end, phase by phase, and score the model it trained.

    python -m benchmarks.quickstart [--workdir runs/quickstart_bench] [--samples 1000] [extra --config.* overrides]

1. Runs `main.py --config configs/vp/ddpm_mnist_conditional.py --mode train` in a fresh workdir, as a new user
   would, and splits its wall time by what the child prints, stamped as it arrives:
       start-up   launch -> "Training from step 0" (imports, data, model initialisation);
       compile    -> the train bar's first step (XLA compiles the fused train step);
       training   -> the bar's last step;
       sampling   -> "samples written" (the final grid: the sampler's compilation and its steps);
       exit       -> the process ends (the last checkpoint is written).
   Median images/s over the logged windows after the first (which holds the compilation). The child's output
   is kept in <workdir>/console.txt, and its lines other than progress bars are printed again at the end.
2. Trains the domain classifier (`--mode train_classifier`, not counted above) and evaluates the final
   checkpoint's EMA parameters (`--mode eval`) on --samples samples twice: with the config's own sampler (the
   one the grid was drawn with) and with ancestral sampling (DDIM with eta = 1 on a 100-step grid). For each:
   the share of samples the classifier assigns to a class with probability > 0.9, FD and KID against the
   train split, the noise floor (FD of the 500 held-out test images), FD / floor, and images/s of the whole
   evaluation (sampling with its compilation, and the classifier's features).
3. Says how fast the machine was while it trained. The promise was made for a machine on which the first
   quickstart's train step (configs/vp/ddpm_mnist_discrete.py, batch 32) runs at 150 images/s, and is kept if
   the command finishes within ten minutes on one twice as slow. A shared machine's speed drifts within minutes,
   so that step is not timed at some other moment: it is timed back to back with this recipe's step (as
   benchmarks/train_throughput.py does, on random data), and the ratio of the two, times the run's median
   images/s, gives the first quickstart's speed during the run, r. The wall time scaled by r / 75 is printed.
The quickstart's promise is >= 90% confident and FD within 3x the floor.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

if __name__ == "__main__" and not __package__:  # run as a file: the repo root, not benchmarks/, goes first
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/vp/ddpm_mnist_conditional.py"
TRAIN_BAR = re.compile(r"train:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")
ANCESTRAL = {"method": "ddim", "eta": 1.0, "num_steps": 100}
REFERENCE = "vp/ddpm_mnist_discrete"  # the first quickstart, whose step ran at 150 images/s where the promise was made
SLOW_MACHINE_IMAGES_PER_S = 75.0  # that step on a machine twice as slow


def run_timed(command: list[str]) -> tuple[dict[str, float], list[str]]:
    """Run `command`, echoing its output, and return the seconds since launch at which each phase ended, and
    the output's lines (tqdm's carriage-return updates split into lines)."""
    start = time.perf_counter()
    marks: dict[str, float] = {}
    lines: list[str] = []
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def note(line: str) -> None:
        now = time.perf_counter() - start
        lines.append(line)
        if "Training from step 0" in line:
            marks.setdefault("start-up", now)
        bar = TRAIN_BAR.search(line)
        if bar and int(bar.group(1)) >= 1:
            marks.setdefault("compile", now)
            if bar.group(1) == bar.group(2):
                marks.setdefault("training", now)
        if "samples written" in line:
            marks.setdefault("sampling", now)

    def read():
        pending = b""
        while chunk := child.stdout.read1(4096):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            pending += chunk
            *done, pending = re.split(rb"[\r\n]", pending)
            for raw in done:
                if raw.strip():
                    note(raw.decode(errors="replace"))
        if pending.strip():
            note(pending.decode(errors="replace"))

    reader = threading.Thread(target=read)
    reader.start()
    returncode = child.wait()
    reader.join()
    marks["exit"] = time.perf_counter() - start
    if returncode:
        raise SystemExit(f"{' '.join(command)} failed with exit status {returncode}.")
    return marks, lines


def phases(marks: dict[str, float]) -> dict[str, float]:
    """Seconds spent in each phase, from the times at which each ended."""
    out, previous = {}, 0.0
    for name in ("start-up", "compile", "training", "sampling", "exit"):
        if name in marks:
            out[name] = marks[name] - previous
            previous = marks[name]
    return out


def score(config, workdir: str, folder: str, sampling: dict, samples: int) -> dict:
    """--mode eval's sample figures of the newest checkpoint with `sampling`'s settings, and its seconds."""
    from modes.evaluate import evaluate

    config = config.copy_and_resolve_references()
    config.sampling.update(sampling)
    config.eval.update(enable_loss=False, enable_sampling=True, enable_bpd=False, num_samples=samples,
                       batch_size=min(250, samples), begin_ckpt=1, end_ckpt=1, kid_subsets=10)
    config.training.snapshot_freq = config.training.n_iters
    start = time.perf_counter()
    [result] = evaluate(config, workdir, folder)
    return {**result, "seconds": time.perf_counter() - start}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(REPO, "runs", "quickstart_bench"))
    parser.add_argument("--samples", type=int, default=1000, help="samples scored per sampler")
    args, overrides = parser.parse_known_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    command = [sys.executable, "main.py", "--config", CONFIG, "--mode", "train", "--workdir", args.workdir,
               *overrides]
    marks, lines = run_timed(command)
    with open(os.path.join(args.workdir, "console.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")

    from absl import flags
    from ml_collections import config_flags

    from modes.train import train_classifier

    config_flags.DEFINE_config_file("config")
    flags.FLAGS([sys.argv[0], "--config", os.path.join(REPO, CONFIG), *overrides])
    config = flags.FLAGS.config
    train_classifier(config, args.workdir)
    results = {"own": score(config, args.workdir, "eval_own_sampler", {}, args.samples),
               "ancestral": score(config, args.workdir, "eval_ancestral", ANCESTRAL, args.samples)}

    from benchmarks.common import load_config
    from benchmarks.train_throughput import time_train_step

    reference = load_config(REFERENCE)
    step_ratio = (reference.training.batch_size / time_train_step(reference, iters=20)["seconds"]) / (
        config.training.batch_size / time_train_step(config, iters=20)["seconds"])

    with open(os.path.join(args.workdir, "metrics.jsonl")) as f:
        train = [m for m in map(json.loads, f) if "loss" in m]
    grids = sorted(glob.glob(os.path.join(args.workdir, "samples", "*.png")))
    print(f"\ncommand          : {' '.join(command[1:])}")
    print(f"console          : {len(lines)} lines, each progress-bar update counted as one "
          f"({os.path.join(args.workdir, 'console.txt')}); without the bars:")
    for line in lines:
        if not re.match(r"\s*(train|sample|ckpt \d+ samples):", line):
            print(f"    {line}")
    print(f"wall time        : {marks['exit']:.0f} s ({marks['exit'] / 60:.1f} min)")
    for name, seconds in phases(marks).items():
        print(f"  {name:15s}: {seconds:6.1f} s")
    speed = statistics.median(m["images_per_sec"] for m in train[1:] or train)
    reference_speed = speed * step_ratio
    print(f"steps            : {train[-1]['step']} of batch {config.training.batch_size}")
    print(f"images/s (median): {speed:.0f}")
    print(f"machine speed    : the first quickstart's step ({REFERENCE}) runs at {step_ratio:.3f}x this one's "
          f"images/s (timed back to back), so at about {reference_speed:.0f} images/s during the run; on a machine "
          f"where it runs at {SLOW_MACHINE_IMAGES_PER_S:.0f}, the wall time would be "
          f"{marks['exit'] * reference_speed / SLOW_MACHINE_IMAGES_PER_S / 60:.1f} min")
    print(f"sample grid      : {grids[-1] if grids else 'none written'}")
    floor = results["own"]["real_test"]
    print(f"classifier       : test accuracy {floor['classifier_accuracy']:.3f}; "
          f"noise floor FD {floor['fd']:.3f} ({floor['num_images']} test images against the train split)")
    print(f"{'sampler':28s} {'confident':>9s} {'FD':>8s} {'FD/floor':>8s} {'KID':>8s} {'images/s':>8s}")
    for name, r in results.items():
        s = r["samples"]
        settings = config.sampling if name == "own" else ANCESTRAL
        label = f"{settings['method']}, {settings['num_steps'] or 'N'} steps" + (", eta 1" if name != "own" else "")
        print(f"{label:28s} {s['confident']:9.1%} {s['fd']:8.3f} {s['fd'] / floor['fd']:8.2f} {s['kid']:8.4f} "
              f"{s['num_images'] / r['seconds']:8.1f}")


if __name__ == "__main__":
    main()
