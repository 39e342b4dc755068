"""Damaged checkpoints and checkpoints of another config: fall back, or stop with one sentence, touching nothing."""
import logging
import os

import jax.numpy as jnp
import pytest

from helpers import tiny_config
from test_cli import run_main, snapshot
from test_training import leaves_equal, make_state
from training.checkpoint import UNREADABLE_DIR, Checkpointer, CheckpointError, CheckpointMismatchError


def tree(k, width=8):
    """A small train-state-like pytree whose values depend on k."""
    return {"step": jnp.asarray(k, jnp.int32),
            "params": {"Conv_0": {"kernel": jnp.arange(144 * width, dtype=jnp.float32).reshape(3, 3, 16, width) * k,
                                  "bias": jnp.full((width,), 0.5 * k)}},
            "rng": jnp.asarray([k, 7], jnp.uint32)}


def save_all(workdir, periodic=(2, 4), preemption=(5,), **kwargs):
    checkpointer = Checkpointer(str(workdir), **kwargs)
    for k in periodic:
        checkpointer.save(k, tree(k), periodic=True, meta={"k": k})
    checkpointer.wait()
    for k in preemption:
        checkpointer.save(k, tree(k), periodic=False)
        checkpointer.wait()
    checkpointer.close()


def largest_file(folder):
    """The largest array-data file below folder (orbax's OCDBT 'd/' folders; small arrays live in the tree nodes)."""
    files = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
             if os.path.basename(root) == "d"]
    return max(files, key=os.path.getsize)


def truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def flip_byte(path):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF
    with open(path, "wb") as f:
        f.write(bytes(data))


@pytest.mark.parametrize("damage", [truncate, flip_byte])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_and_says_so(tmp_path, caplog, damage):
    save_all(tmp_path)
    newest = tmp_path / "checkpoints-meta" / "5"
    damage(largest_file(newest / "state"))  # the array data: orbax notices truncation; flipped bits only our check
    periodic_before = snapshot(tmp_path / "checkpoints")

    with caplog.at_level(logging.WARNING):
        restored = Checkpointer(str(tmp_path)).latest(tree(0))
    assert restored.step == 4 and restored.meta["k"] == 4
    assert leaves_equal(restored.state, tree(4))
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert f"{newest} is unreadable" in warnings and "Resuming from" in warnings
    if damage is truncate:  # the root cause tensorstore reports, naming the array
        assert 'Error reading "params.Conv_0.kernel' in warnings
    # The damaged folder is moved aside (orbax would not save a step older than it), the others are untouched.
    assert not newest.exists() and (tmp_path / UNREADABLE_DIR / "checkpoints-meta" / "5").is_dir()
    assert snapshot(tmp_path / "checkpoints") == periodic_before
    # ... and the resumed run can write step 5 again.
    checkpointer = Checkpointer(str(tmp_path))
    checkpointer.save(5, tree(5), periodic=False)
    checkpointer.wait()
    assert checkpointer.latest(tree(0)).step == 5


def test_no_usable_checkpoint_is_one_sentence_naming_it_and_touches_nothing(tmp_path):
    save_all(tmp_path, periodic=(2,), preemption=(3,))
    for step in ("checkpoints/2", "checkpoints-meta/3"):
        truncate(largest_file(tmp_path / step / "state"))
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=r"No usable checkpoint in .*: the newest, .*checkpoints-meta/3, is "
                                              r"unreadable \(.*\), and so are the 1 older ones"):
        Checkpointer(str(tmp_path)).latest(tree(0))
    assert snapshot(tmp_path) == before


def test_write_debris_is_ignored_and_cleaned_and_the_commit_marker_is_not_needed(tmp_path):
    save_all(tmp_path, periodic=(2,), preemption=(3,))
    # What a kill during a write leaves: a tmp folder of a newer step (here with a half-written array file).
    debris = tmp_path / "checkpoints-meta" / "6.orbax-checkpoint-tmp-1234567890"
    (debris / "state").mkdir(parents=True)
    (debris / "state" / "manifest.ocdbt").write_bytes(b"\x00\x01")
    # On a local file system orbax finalizes by renaming; the marker file inside is informative only.
    os.remove(tmp_path / "checkpoints-meta" / "3" / "commit_success.txt")

    restored = Checkpointer(str(tmp_path)).latest(tree(0))
    assert restored.step == 3 and leaves_equal(restored.state, tree(3))
    assert not debris.exists()


def test_a_checkpoint_of_another_architecture_names_the_parameter_and_touches_nothing(tmp_path):
    save_all(tmp_path, periodic=(2,), preemption=())
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"checkpoints/2 was written for another architecture or "
                                                      r"optimizer: params/Conv_0/bias has shape \(8,\) there but "
                                                      r"\(16,\) under this config \(and 1 more differences\)"):
        Checkpointer(str(tmp_path)).latest(tree(0, width=16))
    extra = dict(tree(0), ema=jnp.zeros(2))
    with pytest.raises(CheckpointMismatchError, match="ema is missing from it"):
        Checkpointer(str(tmp_path)).latest(extra)
    assert snapshot(tmp_path) == before


def test_keep_policy_and_the_single_preemption_checkpoint(tmp_path):
    save_all(tmp_path, periodic=(2, 4, 6, 8, 10), preemption=(1, 3, 11), keep=2, keep_every=4)
    checkpointer = Checkpointer(str(tmp_path))
    assert checkpointer.periodic.all_steps() == [4, 8, 10]  # the newest 2, and the multiples of 4
    assert checkpointer.preemption.all_steps() == [11]  # replaced, never accumulated
    assert sorted(os.listdir(tmp_path / "checkpoints-meta")) == ["11"]


def test_restore_checks_the_fingerprint_of_a_named_step(tmp_path):
    save_all(tmp_path, periodic=(2,), preemption=())
    assert leaves_equal(Checkpointer(str(tmp_path)).restore(2, tree(0)), tree(2))
    flip_byte(largest_file(tmp_path / "checkpoints" / "2" / "state"))
    with pytest.raises(CheckpointError, match=r"checkpoints/2 is unreadable"):
        Checkpointer(str(tmp_path)).restore(2, tree(0))


# ----------------------------------------------------------------------------- the same through main.py


@pytest.fixture
def digits_checkpoint(tmp_path):
    """A workdir with a step-4 checkpoint of the tiny digits model (nf=8) and a sample grid beside it."""
    config = tiny_config()
    _, _, state = make_state(config)
    checkpointer = Checkpointer(str(tmp_path / "run"))
    checkpointer.save(4, state, periodic=True)
    checkpointer.wait()
    (tmp_path / "run" / "samples").mkdir()
    (tmp_path / "run" / "samples" / "step_00000004.png").write_bytes(b"earlier samples")
    return tmp_path / "run"


def cli_error(workdir, *overrides):
    before = snapshot(workdir)
    result = run_main("--workdir", str(workdir), "--config.training.batch_size=16", "--config.optim.warmup=0",
                      *overrides)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert snapshot(workdir) == before
    return last


def test_cli_checkpoint_of_another_architecture(digits_checkpoint):
    message = cli_error(digits_checkpoint, "--config.model.nf=16")
    assert f"The checkpoint {digits_checkpoint}/checkpoints/4 was written for another architecture or optimizer: " \
        in message
    assert "params/AttnBlock_0/GroupNorm_0/bias has shape (16,) there but (32,) under this config" in message


def test_cli_truncated_checkpoint(digits_checkpoint):
    path = largest_file(digits_checkpoint / "checkpoints" / "4" / "state")
    truncate(path)
    message = cli_error(digits_checkpoint, "--config.model.nf=8")
    assert f"No usable checkpoint in {digits_checkpoint}: {digits_checkpoint}/checkpoints/4 is unreadable" in message
    assert "move checkpoints/ and checkpoints-meta/ away to train from scratch" in message
