"""--mode eval / fid_stats / train_classifier: checkpoint numbering, resumable rounds, the domain
classifier, statistics that are never stale, and a killed eval that resumes to the same figures."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
import models
import training.state as training_state
import sde_lib
from configs.vp import ddpm_digits
from evaluation import classifier, features, fid_weights, metrics, resumable
from models.classifier import Classifier
from modes.evaluate import checkpoint_steps, evaluate
from modes.train import train_classifier
from training import parallel
from training.checkpoint import Checkpointer
from training.validation import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The config the subprocesses load: the tiny digits DDPM, sampled in 16-image rounds.
CONFIG_FILE = """
from configs.vp import ddpm_digits


def get_config():
    config = ddpm_digits.get_config()
    config.model.nf = 8
    config.training.snapshot_freq = 8
    config.sampling.predictor = "euler_maruyama"
    config.sampling.num_steps = 60
    config.eval.batch_size = 16
    config.eval.num_samples = 16 * 30 - 5
    config.eval.enable_sampling = True
    config.eval.enable_loss = False
    config.eval.kid_subsets = 10
    config.classifier.nf = 8
    config.classifier.n_iters = 20
    return config
"""


def load_config(path):
    namespace = {}
    exec(compile(open(path).read(), str(path), "exec"), namespace)
    return namespace["get_config"]()


@pytest.fixture(scope="module")
def eval_workdir(tmp_path_factory):
    """A workdir with checkpoint 1 (step 8) of the tiny model, a briefly trained classifier and the config file."""
    root = tmp_path_factory.mktemp("eval")
    (root / "config.py").write_text(CONFIG_FILE)
    config = load_config(root / "config.py")
    model = models.get_model(config)
    optimizer = training_state.get_optimizer(config.optim)
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(3))
    variables = models.init_model(init_rng, config, model)
    # Perturb the zero-initialised output layer so that the "trained" network is not identically zero.
    variables = jax.tree_util.tree_map(lambda p: p + 0.01 * jax.random.normal(state_rng, p.shape), variables)
    state = training_state.create_train_state(state_rng, variables, optimizer).replace(step=jnp.asarray(8))
    checkpointer = Checkpointer(str(root / "work"))
    checkpointer.save(8, state, periodic=True)
    checkpointer.wait()
    checkpointer.close()
    train_classifier(config, str(root / "work"))
    return root


def test_checkpoint_k_is_step_k_times_snapshot_freq(tmp_path):
    for step in (100, 200, 400):
        (tmp_path / "checkpoints" / str(step)).mkdir(parents=True)
    (tmp_path / "checkpoints" / "300.orbax-checkpoint-tmp-1").mkdir()  # an unfinished write is no checkpoint
    config = ddpm_digits.get_config()
    config.training.snapshot_freq = 100
    config.eval.begin_ckpt, config.eval.end_ckpt = 1, 2
    assert checkpoint_steps(config, str(tmp_path)) == [(1, 100), (2, 200)]
    config.eval.end_ckpt = 4
    with pytest.raises(ConfigError, match=r"Checkpoint 3 \(step 300\) not found in .*checkpoints, which holds the "
                                          r"steps \[100, 200, 400\]; checkpoint k is step k \* config.training"):
        checkpoint_steps(config, str(tmp_path))


def test_rounds_are_reused_only_when_finished_and_made_with_the_same_key(tmp_path):
    calls = []

    def compute(r):
        calls.append(r)
        return {"x": np.full((2, 3), r, np.float32)}

    first = resumable.run_rounds(str(tmp_path), "s", 3, "key-a", compute, "test")
    assert calls == [0, 1, 2]
    # A kill mid-write leaves only a temporary file, which is ignored; a truncated round is computed again.
    (tmp_path / ".tmp-abc-s_00003.npz").write_bytes(b"partial")
    (tmp_path / "s_00001.npz").write_bytes((tmp_path / "s_00001.npz").read_bytes()[:50])
    calls.clear()
    again = resumable.run_rounds(str(tmp_path), "s", 4, "key-a", compute, "test")
    assert calls == [1, 3]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["x"], b["x"])
    calls.clear()
    resumable.run_rounds(str(tmp_path), "s", 2, "key-b", compute, "test")  # other settings: nothing reused
    assert calls == [0, 1]


def test_classifier_learns_digits_and_round_trips(tmp_path):
    config = ddpm_digits.get_config()
    config.classifier.nf = 8
    config.classifier.n_iters = 150
    path = train_classifier(config, str(tmp_path))
    assert path == str(tmp_path / "classifier" / "classifier.npz")
    model, params, meta = classifier.load_classifier(str(tmp_path / "classifier"))
    assert (meta["dataset"], meta["image_size"], meta["num_channels"], model.num_classes) == ("digits", 8, 1, 10)
    assert meta["test_accuracy"] > 0.9  # 10 classes: chance is 0.1
    test = datasets.load_split(config, "test", host_index=0, host_count=1)
    predict = jax.jit(lambda x: model.apply({"params": params}, x)["logits"])
    assert classifier.accuracy(predict, test, 64) == pytest.approx(meta["test_accuracy"])


def test_time_conditional_classifier_depends_on_t():
    model = Classifier(num_classes=3, nf=8, time_conditional=True)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 1))
    params = model.init(jax.random.PRNGKey(1), x, jnp.zeros(2))
    a, b = (model.apply(params, x, jnp.full(2, t))["logits"] for t in (10.0, 900.0))
    assert a.shape == (2, 3) and not np.allclose(a, b)
    with pytest.raises(ValueError, match="time-conditional"):
        model.apply(params, x)


def test_statistics_made_with_other_weights_are_computed_again(eval_workdir, tmp_path):
    config = load_config(eval_workdir / "config.py")
    config.eval.classifier_dir = str(tmp_path / "clf")
    nets = []
    for seed in (0, 1):
        model = Classifier(num_classes=10, nf=8)
        params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 8, 8, 1)))["params"]
        classifier.save_classifier(str(tmp_path / "clf"), model, params, dataset="digits", image_size=8,
                                   num_channels=1)
        net = features.get_feature_net(config, str(tmp_path))
        stats = features.split_statistics(config, str(tmp_path), "eval", net, "test")
        assert str(stats["fingerprint"]) == net.fingerprint
        nets.append((net, stats))
    (net0, stats0), (net1, stats1) = nets
    assert net0.fingerprint != net1.fingerprint and not np.allclose(stats0["mu"], stats1["mu"])
    reread = features.split_statistics(config, str(tmp_path), "eval", net1, "test")
    np.testing.assert_array_equal(reread["features"], stats1["features"])
    assert reread["labels"].shape == (179,)


def _env():
    cache = os.environ.get("SCORE_SDE_TEST_COMPILATION_CACHE", "/tmp/score_sde_test_jax_cache")
    return dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")


def _eval_command(root, folder):
    return [sys.executable, "main.py", "--config", str(root / "config.py"), "--mode", "eval",
            "--workdir", str(root / "work"), "--eval_folder", folder]


def test_killed_eval_resumes_to_the_figures_of_an_uninterrupted_one(eval_workdir):
    root = eval_workdir
    rounds = root / "work" / "resumed" / "ckpt_1"
    proc = subprocess.Popen(_eval_command(root, "resumed"), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (rounds / "samples_00002.npz").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    finished = sorted(p.name for p in rounds.glob("samples_*.npz"))
    # The kill came mid-eval: some rounds done, not all, no results yet.
    assert 3 <= len(finished) < 30 and not (root / "work" / "resumed" / "ckpt_1.json").exists()
    mtimes = {name: os.stat(rounds / name).st_mtime_ns for name in finished}

    result = subprocess.run(_eval_command(root, "resumed"), cwd=REPO, env=_env(), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {name: os.stat(rounds / name).st_mtime_ns for name in finished} == mtimes  # not computed again
    assert len(list(rounds.glob("samples_*.npz"))) == 30

    config = load_config(root / "config.py")
    [straight] = evaluate(config, str(root / "work"), "straight")
    resumed = json.loads((root / "work" / "resumed" / "ckpt_1.json").read_text())
    assert straight["samples"]["num_images"] == 16 * 30 - 5
    assert resumed["samples"] == straight["samples"]
    assert resumed["real_test"] == straight["real_test"]
    for r in range(30):
        with np.load(rounds / f"samples_{r:05d}.npz") as a, \
                np.load(root / "work" / "straight" / "ckpt_1" / f"samples_{r:05d}.npz") as b:
            np.testing.assert_array_equal(a["images"], b["images"])
    assert (root / "work" / "resumed" / "ckpt_1_samples.png").exists()


@pytest.fixture
def fake_workdir(tmp_path):
    """Checkpoint 1 (step 8) and earlier results, none of which a failed eval may change."""
    work = tmp_path / "work"
    (work / "checkpoints" / "8").mkdir(parents=True)
    (work / "checkpoints" / "8" / "state").write_bytes(b"a checkpoint")
    (work / "eval").mkdir()
    (work / "eval" / "ckpt_1.json").write_text('{"samples": {"fd": 1.5}}')
    (tmp_path / "config.py").write_text(CONFIG_FILE)
    return tmp_path


def _inception_file_with_one_wrong_shape(path):
    """Every key of the pytorch-fid state dict (as zero-stride views of one float), fc.weight misshapen."""
    from test_pth import TensorSpec, fid_inception_torch_shapes, write_pth

    shapes = dict(fid_inception_torch_shapes(), **{"fc.weight": (1000, 2048)})
    specs = {k: TensorSpec("0", 0, shape, (0,) * len(shape)) for k, shape in shapes.items()}
    write_pth(path, specs, {"0": np.zeros(1, np.float32)})


@pytest.mark.parametrize("kind", ["wrong_shape", "absent"])
def test_bad_inception_file_is_one_line_naming_it_and_touches_nothing(fake_workdir, kind):
    from test_cli import snapshot

    path = fake_workdir / "pt_inception-2015-12-05-6726825d.pth"
    if kind == "wrong_shape":
        _inception_file_with_one_wrong_shape(path)
    before = snapshot(fake_workdir / "work")
    result = subprocess.run(_eval_command(fake_workdir, "eval") + [f"--config.eval.inception_path={path}"],
                            cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    expected = {"wrong_shape": f"error: {path} is not the FID Inception-v3 state dict: 1 wrong shapes: fc.weight "
                               f"(1000, 2048) (expected (1008, 2048))",
                "absent": f"error: FID Inception weights not found at {path}: download "
                          f"pt_inception-2015-12-05-6726825d.pth"}[kind]
    assert last.startswith(expected), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert snapshot(fake_workdir / "work") == before


def test_missing_classifier_says_how_to_train_it(fake_workdir):
    config = load_config(fake_workdir / "config.py")
    with pytest.raises(ConfigError, match=r"No domain classifier at .*work/classifier/classifier.npz: train one "
                                          r"with --mode train_classifier"):
        evaluate(config, str(fake_workdir / "work"), "eval")


@pytest.mark.slow
def test_inception_features_of_grey_images_are_those_of_their_rgb_copies(tmp_path, monkeypatch):
    from test_inception import _random_variables

    from evaluation import inception

    variables = _random_variables(5)
    path = tmp_path / "weights.pth"
    path.write_bytes(b"stands for the weight file")
    monkeypatch.setattr(fid_weights, "load_fid_inception_params", lambda p: variables if p == str(path) else None)
    config = ddpm_digits.get_config()
    config.eval.inception_path = str(path)
    net = features.get_feature_net(config, str(tmp_path))
    assert net.name == "inception" and net.num_classes == 0
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    out = features.compute_features(net, images, batch_size=2)  # two batches, the second padded
    reference = inception.FIDInceptionV3().apply(variables, np.repeat(images, 3, axis=-1) / np.float32(255))
    assert out["features"].shape == (3, 2048) and out["logits"].shape == (3, 1008)
    np.testing.assert_allclose(out["features"], reference["pool3"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["logits"], reference["logits_unbiased"], rtol=1e-5, atol=1e-4)


def test_quality_of_a_class_sorted_set_against_itself():
    """Real splits come sorted by class: the IS splits must be shuffled (else each holds one class, IS = 1)."""
    from modes.evaluate import quality

    labels = np.repeat(np.arange(10), 50)
    logits = 30.0 * np.eye(10)[labels]  # confident and balanced: IS = 10
    feats = np.random.default_rng(0).normal(size=(500, 4)) + labels[:, None]
    ref = dict(zip(("mu", "sigma"), metrics.feature_statistics(feats)), features=feats)
    config = ddpm_digits.get_config()
    config.eval.kid_subsets = 5
    out = quality(feats, logits, ref, config, num_classes=10)
    # exp(H(p(y))) of random 50-image splits of a balanced set: a little under 10 (1 if split in class order).
    assert 9.0 < out["is"] <= 10.0
    assert out["fd"] == pytest.approx(0.0, abs=1e-9)
    assert out["class_histogram"] == [50] * 10 and out["num_images"] == 500
    assert out["confident"] == 1.0
    # Logits 2.2 above nine equal others: p = e^2.2 / (e^2.2 + 9) = 0.50, not confident.
    assert quality(feats, 2.2 * np.eye(10)[labels], ref, config, num_classes=10)["confident"] == 0.0


def test_fid_stats_writes_both_splits_and_reports_the_noise_floor(eval_workdir):
    from modes.evaluate import fid_stats

    config = load_config(eval_workdir / "config.py")
    work = str(eval_workdir / "work")
    real = fid_stats(config, work, "stats_only")
    net = features.get_feature_net(config, work)
    for split, n in (("train", 1618), ("test", 179)):
        stats = metrics.load_reference_stats(features.stats_path(config, work, "stats_only", net, split))
        assert stats["features"].shape == (n, 32) and stats["labels"].shape == (n,)
        assert str(stats["fingerprint"]) == net.fingerprint
    model, params, meta = classifier.load_classifier(os.path.join(work, "classifier"))
    test = datasets.load_split(config, "test", host_index=0, host_count=1)
    predict = jax.jit(lambda x: model.apply({"params": params}, x)["logits"])
    assert real["classifier_accuracy"] == pytest.approx(classifier.accuracy(predict, test, 50))
    assert real["num_images"] == 179 and sum(real["class_histogram"]) == 179 and real["fd"] > 0


def test_bits_per_dim_rounds_keep_every_image_once_in_order(eval_workdir, tmp_path):
    """_bpd with a stand-in likelihood whose 'bits/dim' is each image's mean pixel: 64-image rounds (the last
    one padded) give exactly the per-image values of the whole test split, in order."""
    from modes.evaluate import _bpd

    config = load_config(eval_workdir / "config.py")
    config.eval.batch_size = 64
    fake_bpd_fn = lambda rng, variables, images: (jnp.mean(images, axis=(1, 2, 3)), 7)
    optimizer = training_state.get_optimizer(config.optim)
    state = training_state.create_train_state(jax.random.PRNGKey(0), {"params": {"w": jnp.ones(3)}}, optimizer)
    result = _bpd(config, fake_bpd_fn, state, parallel.make_mesh(), 1, str(tmp_path), "bpd")
    test = datasets.load_split(config, "test", host_index=0, host_count=1)
    expected = test.images.astype(np.float32).mean(axis=(1, 2, 3)) / 255.0
    assert result["num_images"] == 179 and result["mean_nfe"] == 7
    assert result["bpd"] == pytest.approx(expected.mean(), rel=1e-6)
    assert result["bpd_std_err"] == pytest.approx(expected.std(ddof=1) / np.sqrt(179), rel=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["bpd_00000.npz", "bpd_00001.npz", "bpd_00002.npz"]


@pytest.mark.slow
def test_eval_bits_per_dim_is_the_likelihood_of_the_scaled_test_images(eval_workdir):
    """The wiring of --mode eval's bpd: one round of all 179 test images equals get_likelihood_fn applied by
    hand to the EMA score of the checkpoint on the centred images, with the round's rng."""
    from tasks.score import restore_train_state as restore_state
    from samplers.likelihood import get_likelihood_fn

    config = load_config(eval_workdir / "config.py")
    config.eval.update(enable_sampling=False, enable_bpd=True, batch_size=179, bpd_rtol=1e-3, bpd_atol=1e-3)
    work = str(eval_workdir / "work")
    [result] = evaluate(config, work, "bpd")

    model, sde = models.get_model(config), sde_lib.from_config(config)
    state = restore_state(Checkpointer(work), 8, config, model, parallel.make_mesh())
    score_fn = models.get_score_fn(sde, model, state.ema_variables, continuous=False)
    images = datasets.load_split(config, "test", host_index=0, host_count=1).images / np.float32(255)
    likelihood_fn = get_likelihood_fn(sde, rtol=1e-3, atol=1e-3, inverse_scaler=lambda x: (x + 1) / 2)
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), 1), 1), 0)
    bpd, _, _ = jax.jit(likelihood_fn, static_argnums=1)(rng, score_fn, 2 * jnp.asarray(images) - 1)
    assert result["bpd"]["num_images"] == 179
    assert result["bpd"]["bpd"] == pytest.approx(float(np.mean(bpd)), abs=1e-4)


def test_eval_guides_each_sample_towards_its_own_class_and_refuses_classifier_guidance(fake_workdir):
    """--mode eval samples under config.sampling.guidance: 'cfg' with weight w gives (1 + w) s(x | y) - w s(x | null)
    for each sample's class y; 'none' the plain conditional score; 'classifier' is refused in one line before
    anything is written."""
    from configs.vp import ddpm_digits_conditional
    from modes.evaluate import make_eval_guide

    config = ddpm_digits_conditional.get_config()
    assert make_eval_guide(config) is None
    config.sampling.update(guidance="cfg", guidance_weight=2.0)
    labels = jnp.arange(4) % 10

    def score_fn_for_labels(y):  # a toy conditional score: x times (label + 1)
        return lambda x, t: x * (y + 1.0)[:, None]

    x = jnp.ones((4, 3))
    guided = make_eval_guide(config)(score_fn_for_labels, labels)(x, jnp.zeros(4))
    expected = 3.0 * score_fn_for_labels(labels)(x, 0) - 2.0 * score_fn_for_labels(jnp.full(4, 10))(x, 0)
    np.testing.assert_allclose(guided, expected)

    config.sampling.guidance = "classifier"
    config.training.snapshot_freq = 8
    config.eval.update(enable_sampling=True, enable_loss=False)
    work = fake_workdir / "work"
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="classifier guidance runs in --mode sample"):
        evaluate(config, str(work), "eval")
    assert {p: p.read_bytes() for p in work.rglob("*") if p.is_file()} == before
    config.sampling.guidance, config.model.num_classes = "cfg", 0
    with pytest.raises(ConfigError, match="needs a class-conditional model"):
        evaluate(config, str(work), "eval")
    assert {p: p.read_bytes() for p in work.rglob("*") if p.is_file()} == before
