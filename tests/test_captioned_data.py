"""Captioned sources: folders with x.txt beside x.png, (file, caption) tables, and the MNIST digit pairs."""
import json

import numpy as np
import pytest
from PIL import Image

import datasets
from configs import default_digits, default_mnist
from data_sources import DatasetError


def config_for(dataset, path="", size=8, channels=1):
    config = default_digits.get_default_configs()
    config.data.dataset, config.data.path = dataset, str(path)
    config.data.image_size, config.data.num_channels, config.data.random_flip = size, channels, False
    return config


def write_images(root, names, rng):
    pixels = {}
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        pixels[name] = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        Image.fromarray(pixels[name]).save(root / name)
    return pixels


def test_caption_folder_reads_the_text_beside_each_image(tmp_path):
    pixels = write_images(tmp_path, ["b.png", "a.png", "sub/c.png"], np.random.default_rng(0))
    for name, text in (("a", "  a red circle\n"), ("b", "two squares"), ("sub/c", "a dog")):
        (tmp_path / f"{name}.txt").write_text(text)
    train = datasets.load_split(config_for("caption_folder", tmp_path), "train")
    ordered = next(train.ordered_batches(4))
    assert ordered["caption"].tolist() == ["a red circle", "two squares", "a dog", "a dog"]
    assert ordered["mask"].tolist() == [1, 1, 1, 0] and ordered["label"].tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(ordered["image"][0, ..., 0], pixels["a.png"] / np.float32(255))
    batch = train.batch(0, 3)
    by_caption = {"a red circle": "a.png", "two squares": "b.png", "a dog": "sub/c.png"}
    for image, caption in zip(batch["image"], batch["caption"]):  # captions follow their images through shuffling
        np.testing.assert_array_equal(image[..., 0], pixels[by_caption[caption]] / np.float32(255))
    assert next(train.batches(3, steps_per_call=2))["caption"].shape == (2, 3)


def test_missing_or_empty_caption_file_is_named(tmp_path):
    write_images(tmp_path, ["a.png", "b.png"], np.random.default_rng(0))
    (tmp_path / "a.txt").write_text("fine")
    with pytest.raises(DatasetError, match=r"Caption file .*b\.txt for image .*b\.png is missing"):
        datasets.load_split(config_for("caption_folder", tmp_path), "train")
    (tmp_path / "b.txt").write_text(" \n")
    with pytest.raises(DatasetError, match=r"Caption file .*b\.txt is empty"):
        datasets.load_split(config_for("caption_folder", tmp_path), "train")


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_caption_table(tmp_path, kind):
    pixels = write_images(tmp_path, ["img/x.png", "img/y.png"], np.random.default_rng(1))
    rows = [("img/y.png", "a cat, sitting"), ("img/x.png", "a hat")]
    table = tmp_path / f"captions.{kind}"
    if kind == "jsonl":
        table.write_text("".join(json.dumps({"file": f, "caption": c}) + "\n" for f, c in rows))
    else:
        table.write_text("file,caption\n" + "".join(f'{f},"{c}"\n' for f, c in rows))
    batch = next(datasets.load_split(config_for("caption_table", table), "train").ordered_batches(2))
    assert batch["caption"].tolist() == ["a cat, sitting", "a hat"]
    np.testing.assert_array_equal(batch["image"][1, ..., 0], pixels["img/x.png"] / np.float32(255))


def test_caption_table_errors_are_one_line(tmp_path):
    table = tmp_path / "t.jsonl"
    table.write_text(json.dumps({"file": "missing.png", "caption": "x"}) + "\n")
    with pytest.raises(DatasetError, match="Cannot read image .*missing.png"):
        datasets.load_split(config_for("caption_table", table), "train")
    table.write_text(json.dumps({"file": "a.png", "text": "x"}) + "\n")
    with pytest.raises(DatasetError, match="row 1: needs a 'file' and a non-empty 'caption'"):
        datasets.load_split(config_for("caption_table", table), "train")
    (tmp_path / "t.txt").write_text("a.png\tx\n")
    with pytest.raises(DatasetError, match="must end in .jsonl or .csv"):
        datasets.load_split(config_for("caption_table", tmp_path / "t.txt"), "train")


def test_mnist_pairs_are_real_digits_captioned_by_position():
    config = config_for("mnist_pairs", size=56)
    config.data.num_pairs = 40
    train, test = datasets.get_dataset(config)
    assert len(train) == len(test) == 40
    batch = next(train.ordered_batches(40))
    assert batch["image"].shape == (40, 56, 56, 1)
    for caption, label in zip(batch["caption"], batch["label"]):
        assert caption == f"a {label // 10} left of a {label % 10}"
    # The halves are the split's own MNIST digits, with the labels the caption names.
    digits = datasets.load_split(default_mnist.get_default_configs(), "train")
    source = train.source
    np.testing.assert_array_equal(batch["image"][0, 14:42, :28, 0] * 255, digits.images[source.left[0], ..., 0])
    assert source.labels[0] // 10 == digits.labels[source.left[0]]
    # Deterministic, and the default size is ten pairs per digit image; 28 px squares halve each digit.
    again = datasets.load_split(config, "train").source
    np.testing.assert_array_equal(again.left, source.left)
    del config.data.num_pairs
    config.data.image_size = 28
    full = datasets.load_split(config, "test")
    assert len(full) == 5000 and full.batch(0, 2)["image"].shape == (2, 28, 28, 1)
    config.data.random_flip = True
    with pytest.raises(DatasetError, match="random_flip"):
        datasets.load_split(config, "test")
