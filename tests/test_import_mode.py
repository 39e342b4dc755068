"""`--mode import`: a score_sde_pytorch fixture checkpoint becomes a workdir that --mode sample and --mode eval
use unchanged, with the EMA weights; bad files are one line and leave the workdir empty."""
import json
import os
import pickle
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
import sde_lib
from models.score_sde_import import config_from_reference
from modes.evaluate import evaluate
from modes.import_checkpoint import import_checkpoint
from modes.sample import sample
from tasks.score import restore_train_state
from training import parallel
from training.checkpoint import Checkpointer
from tests.reference_fixtures import fixture_path, load_io, nchw_to_nhwc, relative_error

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASE = "ncsnpp_ve_continuous"
STEP = 1234  # the fixture's 'step'


def fixture_config():
    with open(fixture_path("score_sde_pytorch", CASE + ".json")) as f:
        return config_from_reference(json.load(f))


def run_main(config_file, workdir, *overrides):
    return subprocess.run([sys.executable, "main.py", "--config", str(config_file), "--mode", "import",
                           "--workdir", str(workdir), *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    """A config file that is the fixture's reference config (configs/ files work the same way)."""
    path = tmp_path_factory.mktemp("config") / "reference.py"
    path.write_text("import json\nfrom models.score_sde_import import config_from_reference\n\n\n"
                    "def get_config():\n"
                    f"    with open({fixture_path('score_sde_pytorch', CASE + '.json')!r}) as f:\n"
                    "        return config_from_reference(json.load(f))\n")
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, config_file):
    folder = tmp_path_factory.mktemp("imported")
    result = run_main(config_file, folder, "--config.import_from=" + fixture_path("score_sde_pytorch", CASE + ".pth"))
    assert result.returncode == 0, result.stderr
    return str(folder)


def test_restored_ema_score_is_the_reference_ema_score(workdir):
    config = fixture_config()
    model, mesh = models.get_model(config), parallel.make_mesh()
    with Checkpointer(workdir) as checkpointer:
        state = restore_train_state(checkpointer, STEP, config, model, mesh)
    io = load_io("score_sde_pytorch", CASE + ".npz")
    x, t = jnp.asarray(nchw_to_nhwc(io["x_nchw"])), jnp.asarray(io["t"])
    sde = sde_lib.from_config(config)
    score = jax.jit(models.get_score_fn(sde, model, state.ema_variables, continuous=True))(x, t)
    error = relative_error(score, nchw_to_nhwc(io["score_ema_nchw"]))
    raw = relative_error(jax.jit(models.get_score_fn(sde, model, state.variables))(x, t),
                         nchw_to_nhwc(io["score_model_nchw"]))
    print(f"restored EMA score: relative error {error:.2e}; raw weights {raw:.2e}")
    assert error < 1e-4 and raw < 1e-4 and int(state.step) == STEP


def test_sample_and_eval_run_on_the_imported_workdir(workdir, tmp_path):
    config = fixture_config()
    config.sampling.method, config.sampling.num_steps, config.sampling.num_samples = "ddim", 2, 2
    config.eval.batch_size = 2
    path = sample(config, workdir, "samples")
    assert os.path.isfile(path.replace(".npz", ".png")) and np.load(path)["image"].shape == (2, 16, 16, 3)

    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "test.npz", image=images)
    config.data.dataset, config.data.path = "npz", str(tmp_path / "test.npz")
    config.training.snapshot_freq = STEP  # eval's checkpoint 1 is step 1 * snapshot_freq
    config.eval.begin_ckpt = config.eval.end_ckpt = 1
    (result,) = evaluate(config, workdir, "eval")
    assert result["step"] == STEP and np.isfinite(result["eval_loss"])


def test_a_workdir_with_checkpoints_is_refused(workdir):
    config = fixture_config()
    config.import_from = fixture_path("score_sde_pytorch", CASE + ".pth")
    with pytest.raises(ValueError, match=r"already holds the checkpoints \[1234\]; import into an empty"):
        import_checkpoint(config, workdir)


def evil_pth(path, marker):
    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Evil(), protocol=2))


def test_bad_files_are_one_line_and_write_nothing(tmp_path, config_file):
    marker = tmp_path / "ran"
    evil_pth(tmp_path / "evil.pth", marker)
    result = run_main(config_file, tmp_path / "w1", f"--config.import_from={tmp_path / 'evil.pth'}")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "system" in lines[0] and not marker.exists(), result.stderr
    assert os.listdir(tmp_path / "w1") == []

    with open(fixture_path("score_sde_pytorch", CASE + ".pth"), "rb") as f:
        (tmp_path / "cut.pth").write_bytes(f.read()[:5000])
    other = fixture_path("score_sde_pytorch", "ncsnpp_ve_discrete.pth")  # positional embedding, not Fourier
    config = fixture_config()
    for name, source, message in [("w2", str(tmp_path / "cut.pth"), "truncated"),
                                  ("w3", other, "GaussianFourierProjection_0"),
                                  ("w4", "", "needs --config.import_from")]:
        config.import_from = source
        with pytest.raises(ValueError, match=message) as err:
            import_checkpoint(config, str(tmp_path / name))
        assert "\n" not in str(err.value) and not os.path.exists(tmp_path / name)
