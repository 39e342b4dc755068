"""`--mode sample` (training/sample.py) on a tiny class-conditional checkpoint: files, shapes, labels, the
observed pixels of inpainting, and one-sentence errors."""
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import models
import training.state as training_state
import sde_lib
from evaluation import features
from evaluation.classifier import guidance_log_prob_fn
from modes.train import train_classifier
from helpers import tiny_config
from training.checkpoint import Checkpointer
from modes import sample as sample_mode
from modes.sample import sample
from samplers import inverse
from training.validation import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def conditional_config(**sampling):
    config = tiny_config()
    config.model.num_classes = 10
    config.training.label_dropout = 0.2
    config.model.num_scales = 50  # 50 sampling steps of the model's own chain
    for field, value in sampling.items():
        config.sampling[field] = value
    return config


def save_fresh_checkpoint(config, folder):
    """A periodic checkpoint of step 4 holding a freshly initialised model (training it would only add
    compile time: the train loop has its own tests)."""
    variables = models.init_model(jax.random.PRNGKey(0), config)
    state = training_state.create_train_state(jax.random.PRNGKey(1), variables, training_state.get_optimizer(config.optim))
    checkpointer = Checkpointer(str(folder))
    checkpointer.save(4, state, periodic=True)
    checkpointer.wait()
    checkpointer.close()
    return folder


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return save_fresh_checkpoint(conditional_config(), tmp_path_factory.mktemp("conditional"))


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    """(config, folder) with a briefly trained domain classifier and noise-conditional classifier in
    folder/classifier and folder/noise_classifier."""
    folder = str(tmp_path_factory.mktemp("classifiers"))
    config = conditional_config()
    config.classifier.nf = 8
    config.classifier.n_iters = 30
    train_classifier(config, folder)
    config.classifier.noise_conditional = True
    train_classifier(config, folder)
    return config, folder


def test_generate_writes_one_labelled_row_per_class(workdir):
    config = conditional_config(labels="1,3,7", num_samples=2, guidance="cfg", guidance_weight=1.5)
    path = sample(config, str(workdir), "eval")
    assert path == os.path.join(str(workdir), "eval", "generate_step4_pc_cfg_w1.5.npz")
    with np.load(path) as f:
        assert f["image"].shape == (6, 8, 8, 1) and f["image"].dtype == np.uint8
        np.testing.assert_array_equal(f["label"], [1, 1, 3, 3, 7, 7])
        assert str(f["guidance"]) == "cfg" and float(f["guidance_weight"]) == 1.5 and int(f["step"]) == 4
    with Image.open(path[:-4] + ".png") as im:
        # caption band of 16 px, then 3 rows of (8 + 2) px enlarged twice, plus the grid's padding
        assert im.height == 16 + 2 * (3 * 10 + 2)


def test_unconditional_samples_of_a_conditional_model_and_chunks(workdir):
    """labels='null' draws from the null label; more samples than config.eval.batch_size come in chunks."""
    config = conditional_config(labels="null", num_samples=20)
    with np.load(sample(config, str(workdir), "other")) as f:
        assert f["image"].shape == (20, 8, 8, 1)  # one chunk of 16 and one padded chunk
        np.testing.assert_array_equal(f["label"], -1)
        assert len({im.tobytes() for im in f["image"]}) == 20


def test_inpainting_dataset_images_keeps_their_known_pixels(workdir):
    config = conditional_config(task="inpaint", input_indices="0,5", mask="half", num_samples=3, labels="4")
    with np.load(sample(config, str(workdir), "eval")) as f:
        images, inputs = f["image"], f["input"]
        assert images.shape == (6, 8, 8, 1) and inputs.shape == (2, 8, 8, 1)
        np.testing.assert_array_equal(f["input_index"], [0, 5])
        np.testing.assert_array_equal(f["label"], 4)
        known = np.repeat(inputs, 3, axis=0)
        np.testing.assert_array_equal(images[:, :, :4], known[:, :, :4])  # the left half is the input's
        assert np.any(images[:, :, 4:] != known[:, :, 4:])


def test_superresolution_observes_each_inputs_block_means(workdir, monkeypatch):
    """task 'superres': the PC sampler is constrained by samplers.inverse.superresolution of each input at
    config.sampling.factor (that its samples keep the block means is tests/test_inverse.py's; this untrained
    model's samples are clipped to [0, 1] far from them), and a row per input is written, its observation first."""
    seen, superresolution = [], inverse.superresolution

    def spy(known, factor):
        seen.append((known.shape, factor))
        return superresolution(known, factor)

    monkeypatch.setattr(sample_mode.inverse, "superresolution", spy)
    config = conditional_config(task="superres", input_indices="0,5", factor=4, num_samples=2, labels="4")
    with np.load(sample(config, str(workdir), "eval")) as f:
        assert f["image"].shape == (4, 8, 8, 1) and f["input"].shape == (2, 8, 8, 1)
    assert seen and all(call == ((4, 8, 8, 1), 4) for call in seen)
    with Image.open(os.path.join(str(workdir), "eval", "superres_step4_pc.png")) as im:
        assert im.height == 16 + 2 * (2 * 10 + 2)  # caption, then one row per input


def test_inpainting_an_image_file_with_a_mask_file(workdir, tmp_path):
    image = np.zeros((16, 16), np.uint8)
    image[4:12, 6:10] = 255
    Image.fromarray(image).save(tmp_path / "bar.png")  # resized to 8x8
    mask = np.zeros((8, 8), np.uint8)
    mask[:, 2:6] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    config = conditional_config(task="inpaint", input=str(tmp_path / "bar.png"), mask=str(tmp_path / "mask.png"),
                                num_samples=2)
    with np.load(sample(config, str(workdir), "eval")) as f:
        np.testing.assert_array_equal(f["input_index"], [-1])
        np.testing.assert_array_equal(f["label"], -1)
        np.testing.assert_array_equal(f["image"][:, :, 2:6], np.repeat(f["input"], 2, axis=0)[:, :, 2:6])


def test_outpainting_keeps_the_input_and_fills_the_canvas_around_it(workdir):
    """The test image, resized to 4x4, at row 2, column 3 of the 8x8 canvas: its pixels are kept exactly (the
    PC sampler's constraint), everything around them is sampled."""
    from data_sources.preprocess import ImageFormat
    from datasets import load_split

    config = conditional_config(task="inpaint", input_indices="0", outpaint="4,2,3", num_samples=2, labels="4")
    with np.load(sample(config, str(workdir), "eval")) as f:
        images, canvas, known = f["image"], f["input"], f["mask"]
    assert images.shape == (2, 8, 8, 1) and canvas.shape == (1, 8, 8, 1)
    expected = np.zeros((8, 8), np.float32)
    expected[2:6, 3:7] = 1
    np.testing.assert_array_equal(known, expected)
    test = load_split(config, "test", host_index=0, host_count=1).source.read(np.array([0]))[0]
    np.testing.assert_array_equal(canvas[0, 2:6, 3:7], ImageFormat(4, 1).apply(test)[0])
    np.testing.assert_array_equal(images[:, 2:6, 3:7], np.repeat(canvas, 2, axis=0)[:, 2:6, 3:7])  # zero error
    assert np.all(canvas[0][known == 0] == 0) and np.any(images[:, known == 0] != 0)


@pytest.mark.parametrize("spec,message", [
    ("4,2", "must be 'size,top,left', three integers"),
    ("4,5,0", "a 4x4 input at row 5, column 0 must lie inside the 8x8 canvas"),
    ("4,-1,0", "must lie inside the 8x8 canvas"),
    ("0,0,0", "a 0x0 input"),
    ("8,0,0", "covers the whole 8x8 canvas, so nothing is left to fill"),
])
def test_bad_outpainting_geometry_is_one_line(workdir, spec, message):
    config = conditional_config(task="inpaint", input_indices="0", outpaint=spec)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        sample(config, str(workdir), "eval")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="needs task 'inpaint', not 'generate'"):
        sample(conditional_config(outpaint="4,2,2"), str(workdir), "eval")


@pytest.mark.parametrize("value,message", [(255, "white everywhere: nothing is left to fill"),
                                           (0, "black everywhere: no pixel is known")])
def test_a_mask_that_covers_nothing_or_everything_is_one_line(workdir, tmp_path, value, message):
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(tmp_path / "mask.png")
    config = conditional_config(task="inpaint", input_indices="0", mask=str(tmp_path / "mask.png"))
    with pytest.raises(ConfigError, match=message):
        sample(config, str(workdir), "eval")


def test_img2img_writes_a_row_per_input(workdir):
    """SDEdit through --mode sample: each input's samples in its row of the npz and the grid, the strength
    recorded; the closed-form behaviour is tests/test_img2img.py's."""
    config = conditional_config(task="img2img", input_indices="2,3", strength=0.5, num_samples=2, method="ddim",
                                num_steps=20, labels="6")
    with np.load(sample(config, str(workdir), "eval")) as f:
        assert f["image"].shape == (4, 8, 8, 1) and f["input"].shape == (2, 8, 8, 1)
        np.testing.assert_array_equal(f["input_index"], [2, 3])
        np.testing.assert_array_equal(f["label"], 6)
        assert float(f["strength"]) == 0.5
        assert len({im.tobytes() for im in f["image"]}) == 4  # each sample its own noise
    with Image.open(os.path.join(str(workdir), "eval", "img2img_step4_ddim.png")) as im:
        assert im.height == 16 + 2 * (2 * 10 + 2)  # caption, then one row per input


@pytest.mark.parametrize("fields,message", [
    ({"labels": "3,12"}, "class(es) [12] outside 0..9"),
    ({"labels": "three"}, "must be '', 'all', 'null' or comma-separated class numbers"),
    ({"guidance_weight": 2.0}, "has no effect with guidance 'none'"),
    ({"task": "inpaint"}, "needs exactly one of config.sampling.input"),
    ({"task": "inpaint", "input_indices": "0,9999"}, "must lie in 0..178"),
    ({"task": "inpaint", "input_indices": "0", "mask": "nowhere"}, "is neither one of"),
    ({"task": "inpaint", "input_indices": "0,1", "labels": "1,2,3"}, "gives 3 classes for 2 inputs"),
    ({"task": "colorize", "input_indices": "0"}, "needs colour data"),
    ({"task": "superres", "input_indices": "0", "factor": 3}, "factor of at least 2 that divides the image size 8x8"),
    ({"task": "inpaint", "input_indices": "0", "method": "ode"}, "runs on the PC sampler"),
    ({"checkpoint": 8}, "config.sampling.checkpoint=8 is not in"),
    ({"task": "img2img", "input_indices": "0", "strength": 0.0}, "config.sampling.strength=0.0 must lie in (0, 1]"),
    ({"task": "img2img", "input_indices": "0", "strength": 1.5}, "config.sampling.strength=1.5 must lie in (0, 1]"),
])
def test_bad_requests_are_one_sentence(workdir, fields, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        sample(conditional_config(**fields), str(workdir), "eval")


def test_a_mask_file_of_the_wrong_size_is_named(workdir, tmp_path):
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(tmp_path / "small.png")
    config = conditional_config(task="inpaint", input_indices="0", mask=str(tmp_path / "small.png"))
    with pytest.raises(ConfigError, match=r"small.png is 7x5; it must be 8x8"):
        sample(config, str(workdir), "eval")


def test_labels_for_an_unconditional_model_and_cfg_without_classes_are_refused(workdir):
    config = conditional_config(labels="3")
    config.model.num_classes = 0
    with pytest.raises(ConfigError, match="the model is unconditional"):
        sample(config, str(workdir), "eval")
    config = conditional_config(guidance="cfg", guidance_weight=1.0)
    config.model.num_classes = 0
    with pytest.raises(ConfigError, match="needs a class-conditional model"):
        sample(config, str(workdir), "eval")


def test_command_line_without_a_checkpoint_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "main.py", "--config", "configs/vp/ddpm_digits_conditional.py",
                             "--mode", "sample", "--workdir", str(tmp_path / "empty")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: No checkpoint in {tmp_path / 'empty' / 'checkpoints'}; train one first with --mode train and the "
        f"same --config and --workdir.")
    assert not os.path.exists(tmp_path / "empty" / "eval")


def test_noise_conditional_classifier_gives_log_probabilities_at_each_time(classifiers):
    config, folder = classifiers
    log_prob_fn, num_classes = guidance_log_prob_fn(config, folder, sde_lib.from_config(config))
    assert num_classes == 10
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 1))
    early, late = (log_prob_fn(x, jnp.full(3, t)) for t in (0.01, 0.9))
    assert early.shape == (3, 10)
    np.testing.assert_allclose(jax.nn.logsumexp(early, axis=-1), 0.0, atol=1e-5)
    assert float(jnp.max(jnp.abs(early - late))) > 1e-3  # conditioned on the noise level


def test_classifier_guidance_of_an_unconditional_model_and_the_accuracy_file(classifiers, tmp_path):
    """An unconditional model guided by the noise-conditional classifier towards classes 2 and 5; the domain
    classifier's per-class accuracy of the samples is written beside them."""
    config, folder = classifiers
    config = conditional_config(labels="2,5", num_samples=2, guidance="classifier", guidance_weight=2.0,
                                classifier_dir=os.path.join(folder, "noise_classifier"))
    config.model.num_classes = 0
    config.eval.classifier_dir = os.path.join(folder, "classifier")
    save_fresh_checkpoint(config, tmp_path)
    path = sample(config, str(tmp_path), "eval")
    with np.load(path) as f:
        images, labels = f["image"], f["label"]
    np.testing.assert_array_equal(labels, [2, 2, 5, 5])
    with open(path[:-4] + "_accuracy.json") as f:
        result = json.load(f)
    logits = features.compute_features(features.classifier_net(config, str(tmp_path)), images, 4)["logits"]
    hit = np.argmax(logits, axis=-1) == labels
    assert result["per_class_accuracy"] == {"2": float(np.mean(hit[:2])), "5": float(np.mean(hit[2:]))}
    assert result["accuracy"] == float(np.mean(hit))
    assert result["class_histogram"] == np.bincount(np.argmax(logits, axis=-1), minlength=10).tolist()


def test_guidance_classifier_that_is_missing_or_for_another_sde_is_named(classifiers, tmp_path):
    config = conditional_config(labels="1", guidance="classifier", guidance_weight=1.0)
    with pytest.raises(ConfigError, match="No noise-conditional classifier in .*--config.classifier.noise_conditional"):
        sample(config, str(tmp_path), "eval")
    config, folder = classifiers
    config = conditional_config(labels="1", guidance="classifier", guidance_weight=1.0)
    config.training.sde = "subvpsde"
    with pytest.raises(ConfigError, match=r"trained for .*'vpsde'.*needs a noise-conditional one for .*'subvpsde'"):
        sample(config, folder, "eval")
