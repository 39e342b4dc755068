"""Kill -9 a training run at random moments, rerun the same command, and get the model an uninterrupted run gets."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs.vp import ddpm_digits
from test_training import leaves_equal, make_state
from training import parallel
from training.checkpoint import Checkpointer, abstract_like

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The run under test: a pre-emption checkpoint every 5 steps, periodic ones every 20 (only the newest kept), a
#: log every 3 steps, so checkpoints fall inside log windows and kills land in writes and deletions often. (Each
#: orbax save of the 540-leaf state costs about a CPU second, hence no more. Resuming the eval batches is checked
#: in test_training; one eval at the end keeps each process from tracing it.)
OVERRIDES = {
    "model.nf": 8, "training.batch_size": 16, "training.snapshot_sampling": False, "training.n_iters": 40,
    "training.log_freq": 3, "training.eval_freq": 40, "training.snapshot_freq": 20,
    "training.snapshot_freq_for_preemption": 5, "training.keep_checkpoints": 1, "optim.warmup": 0, "optim.lr": 2e-3,
}


def config():
    c = ddpm_digits.get_config()
    for path, value in OVERRIDES.items():
        group, name = path.split(".")
        c[group][name] = value
    return c


def launch(workdir, log, overrides=OVERRIDES, mode="train", config_file="configs/vp/ddpm_digits.py"):
    """`python main.py --config <config_file> --mode <mode> ...` for the run under test (stderr to the file
    `log`), sharing the test session's compilation cache."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    args = [f"--config.{k}={v}" for k, v in overrides.items()]
    with open(log, "w") as stderr:
        return subprocess.Popen([sys.executable, "main.py", "--config", config_file, "--mode", mode,
                                 "--workdir", str(workdir), *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=stderr)


def metrics(workdir):
    """The complete records of workdir/metrics.jsonl (a kill can leave a torn last line)."""
    path = os.path.join(workdir, "metrics.jsonl")
    records = []
    if os.path.exists(path):
        for line in open(path):
            try:
                records.append(json.loads(line))
            except ValueError:
                pass
    return records


def logged_step(workdir):
    return max((m["step"] for m in metrics(workdir)), default=0)


def metrics_inode(workdir):
    """A resumed run rewrites metrics.jsonl (os.replace: a new inode) before it logs anything."""
    path = os.path.join(workdir, "metrics.jsonl")
    return os.stat(path).st_ino if os.path.exists(path) else None


def tmp_folders(workdir):
    return set(glob.glob(os.path.join(workdir, "checkpoints*", "*.orbax-checkpoint-tmp*")))


def signal_when(proc, condition, signum=signal.SIGKILL, timeout=240.0):
    """Send `signum` to `proc` as soon as condition() holds (polled every 2 ms) and wait for it to end; False if
    it ended first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if condition():
            proc.send_signal(signum)
            proc.wait(timeout=timeout)
            return True
        time.sleep(0.002)
    assert proc.poll() is not None, "the training run hung"
    return False


def resumed_step(stderr):
    """The step the run says it resumed from; None if it was killed before it got that far, or started afresh."""
    for line in stderr.splitlines():
        if "Resumed from" in line:
            return int(line.split("(step ")[1].split(" of ")[0])
    return None


def newest_checkpoint(workdir):
    """The newest finalized checkpoint step: what a rerun resumes from (0 when there is none)."""
    return max((int(name) for kind in ("checkpoints", "checkpoints-meta")
                for name in os.listdir(os.path.join(workdir, kind)) if name.isdigit()), default=0)


def test_sigkill_at_random_moments_then_rerun_gives_the_uninterrupted_model(tmp_path):
    rng = np.random.default_rng(8)
    workdir = str(tmp_path / "killed")
    n_iters = OVERRIDES["training.n_iters"]
    # SIGKILL at a checkpoint write (as soon as a new tmp folder appears), at a random logged step plus a random
    # delay (landing in steps, writes and deletions alike) and during start-up (imports, restore, tracing); and
    # one SIGTERM, which saves before it stops.
    plans = ["write", ("step", 9), "startup", ("sigterm", 17), "write"]
    straight = str(tmp_path / "straight")
    reference = launch(straight, tmp_path / "straight.log")  # the uninterrupted run, alongside the others
    kills = []  # (plan, step reached, newest checkpoint left behind)
    for n, plan in enumerate(plans):
        start = newest_checkpoint(workdir) if os.path.isdir(os.path.join(workdir, "checkpoints")) else 0
        debris, inode = tmp_folders(workdir), metrics_inode(workdir)  # left by the previous kill
        log = tmp_path / f"run{n}.log"
        proc = launch(workdir, log)
        started = time.monotonic()
        if plan == "write":
            condition = lambda: bool(tmp_folders(workdir) - debris)  # noqa: E731
        elif plan == "startup":
            delay = rng.uniform(1.0, 4.0)
            condition = lambda: time.monotonic() - started > delay  # noqa: E731
        else:
            target, delay, seen = plan[1] + int(rng.integers(0, 4)), rng.uniform(0.0, 0.3), []
            condition = lambda: metrics_inode(workdir) != inode and logged_step(workdir) >= target and (  # noqa: E731
                seen.append(time.monotonic()) or time.monotonic() - seen[0] > delay)
        signum = signal.SIGTERM if plan[0] == "sigterm" else signal.SIGKILL
        stopped = signal_when(proc, condition, signum)
        stderr = log.read_text()
        assert stopped, f"the run finished before the kill point {plan}:\n{stderr}"
        assert resumed_step(stderr) in (None, start), stderr  # never a fallback: every finalized checkpoint is good
        reached = max(start, logged_step(workdir) if metrics_inode(workdir) != inode else 0)
        if signum == signal.SIGTERM:  # the run finishes its step, saves it and exits 143, saying so
            assert proc.returncode == 143, stderr
            reached = int(stderr.split("Stopped by SIGTERM at step ")[1].split()[0])
            assert f"after saving a pre-emption checkpoint in {workdir}; rerun the same command" in stderr
            assert newest_checkpoint(workdir) == reached
        kills.append((plan, reached, newest_checkpoint(workdir)))
    proc = launch(workdir, tmp_path / "last.log")
    assert proc.wait(timeout=600) == 0, (tmp_path / "last.log").read_text()
    assert resumed_step((tmp_path / "last.log").read_text()) == kills[-1][2]
    assert reference.wait(timeout=600) == 0, (tmp_path / "straight.log").read_text()

    final = [Checkpointer(w).latest(abstract_like(lambda: make_state(config())[2], parallel.make_mesh()))
             for w in (workdir, straight)]
    assert final[0].step == final[1].step == n_iters
    assert leaves_equal(final[0].state, final[1].state)  # params, EMA, optimizer state, step and rng, bit for bit

    # The same curves, each step logged once although steps were redone after each kill.
    for key in ("loss", "eval_loss"):
        killed_curve = [(m["step"], m[key]) for m in metrics(workdir) if key in m]
        straight_curve = [(m["step"], m[key]) for m in metrics(straight) if key in m]
        assert killed_curve == straight_curve, key

    # Kill debris is cleaned up; the pre-emption checkpoint is replaced and the keep policy holds.
    assert not tmp_folders(workdir)
    assert len(os.listdir(os.path.join(workdir, "checkpoints-meta"))) <= 1
    assert Checkpointer(workdir).periodic.all_steps() == [40]

    lost = [reached - left for _, reached, left in kills]
    print(f"\nkill points (plan, step reached, newest checkpoint left): {kills}; steps lost: {lost}")


CLASSIFIER = {"classifier.nf": 8, "classifier.batch_size": 32, "classifier.n_iters": 30, "classifier.log_freq": 3,
              "classifier.snapshot_freq_for_preemption": 5}


@pytest.mark.slow  # four main.py processes; about a minute idle, five under load
def test_the_domain_classifier_resumes_exactly_after_sigkill(tmp_path):
    """--mode train_classifier runs on the one loop: killed at a checkpoint write and again mid-run, the rerun
    ends with the uninterrupted run's weights and state, bit for bit, and the same logged losses."""
    from evaluation.classifier import load_classifier

    killed, straight = tmp_path / "killed", tmp_path / "straight"
    reference = launch(straight, tmp_path / "straight.log", CLASSIFIER, "train_classifier")
    folder = str(killed / "classifier")
    inode = None
    for n, kill_at in enumerate(("step", "write")):  # SIGKILL mid-run, then as soon as a checkpoint write starts
        start = newest_checkpoint(folder) if os.path.isdir(os.path.join(folder, "checkpoints")) else 0
        debris, log = tmp_folders(folder), tmp_path / f"run{n}.log"
        proc = launch(killed, log, CLASSIFIER, "train_classifier")
        condition = ((lambda: metrics_inode(folder) != inode and logged_step(folder) >= 12) if kill_at == "step"
                     else (lambda: bool(tmp_folders(folder) - debris)))
        assert signal_when(proc, condition), log.read_text()
        assert resumed_step(log.read_text()) in (None, start) and (n == 0 or start > 0), log.read_text()
        inode = metrics_inode(folder)
    start = newest_checkpoint(folder)
    proc = launch(killed, tmp_path / "last.log", CLASSIFIER, "train_classifier")
    assert proc.wait(timeout=600) == 0, (tmp_path / "last.log").read_text()
    assert resumed_step((tmp_path / "last.log").read_text()) == start > 0
    assert reference.wait(timeout=600) == 0, (tmp_path / "straight.log").read_text()

    (_, ours, meta), (_, theirs, their_meta) = (load_classifier(str(w / "classifier")) for w in (killed, straight))
    assert leaves_equal(ours, theirs)
    assert meta["test_accuracy"] == their_meta["test_accuracy"]
    curves = [[(m["step"], m["loss"]) for m in metrics(str(w / "classifier")) if "loss" in m] for w in (killed, straight)]
    assert curves[0] == curves[1] and [s for s, _ in curves[0]] == list(range(3, 31, 3))
