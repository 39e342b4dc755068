"""`--mode sample` (training/sample.py) on a tiny class-conditional checkpoint: files, shapes, labels, the
observed pixels of inpainting, and one-sentence errors."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import losses
import models
from helpers import tiny_config
from training.checkpoint import Checkpointer
from training.sample import sample
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


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A periodic checkpoint of step 4 holding a freshly initialised conditional model (training it would
    only add compile time: the train loop has its own tests)."""
    import jax

    folder = tmp_path_factory.mktemp("conditional")
    config = conditional_config()
    variables = models.init_model(jax.random.PRNGKey(0), config)
    state = losses.create_train_state(jax.random.PRNGKey(1), variables, losses.get_optimizer(config))
    checkpointer = Checkpointer(str(folder))
    checkpointer.save(4, state, periodic=True)
    checkpointer.wait()
    checkpointer.close()
    return folder


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


@pytest.mark.parametrize("fields,message", [
    ({"labels": "3,12"}, "class(es) [12] outside 0..9"),
    ({"labels": "three"}, "must be '', 'all', 'null' or comma-separated class numbers"),
    ({"guidance_weight": 2.0}, "has no effect with guidance 'none'"),
    ({"task": "inpaint"}, "needs exactly one of config.sampling.input"),
    ({"task": "inpaint", "input_indices": "0,9999"}, "must lie in 0..178"),
    ({"task": "inpaint", "input_indices": "0", "mask": "nowhere"}, "is neither one of"),
    ({"task": "inpaint", "input_indices": "0,1", "labels": "1,2,3"}, "gives 3 classes for 2 inputs"),
    ({"task": "colorize", "input_indices": "0"}, "needs colour data"),
    ({"task": "inpaint", "input_indices": "0", "method": "ode"}, "runs on the PC sampler"),
    ({"checkpoint": 8}, "config.sampling.checkpoint=8 is not in"),
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
