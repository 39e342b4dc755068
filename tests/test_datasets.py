"""Embedded datasets, preprocessing and the deterministic, host-sharded batch order."""
import gzip
import os

import numpy as np
import pytest

import datasets
from configs import default_digits, default_fashion_mnist, default_mnist


def test_digits_splits_are_disjoint_stratified_and_real():
    config = default_digits.get_default_configs()
    train, test = datasets.get_dataset(config)
    assert len(train) + len(test) == 1797
    assert len(test) == 179
    assert train.images.shape[1:] == (8, 8, 1) and train.images.dtype == np.uint8
    assert train.images.max() == 255
    # Every class is in both splits, and no image of the test split is a train image.
    assert set(np.unique(test.labels)) == set(range(10)) == set(np.unique(train.labels))
    train_rows = {im.tobytes() for im in train.images}
    assert sum(im.tobytes() in train_rows for im in test.images) < 5  # sklearn digits has a few duplicates


def test_mnist_has_4500_train_and_500_test_images_at_28px():
    config = default_mnist.get_default_configs()
    train, test = datasets.get_dataset(config)
    assert (len(train), len(test)) == (4500, 500)
    assert train.images.shape[1:] == (28, 28, 1)
    assert np.bincount(test.labels).tolist() == [50] * 10


def test_resize_and_channel_conversion():
    config = default_digits.get_default_configs()
    config.data.image_size, config.data.num_channels = 16, 3
    train, _ = datasets.get_dataset(config)
    assert train.images.shape[1:] == (16, 16, 3)
    np.testing.assert_array_equal(train.images[..., 0], train.images[..., 2])
    # A constant image stays constant under resizing; RGB -> gray uses ITU-R 601 luma weights.
    const = np.full((1, 5, 5, 1), 77, np.uint8)
    assert np.all(datasets.resize_images(const, 9, 1) == 77)
    rgb = np.zeros((1, 2, 2, 3), np.uint8)
    rgb[..., 1] = 200
    assert np.all(datasets.resize_images(rgb, 2, 1) == round(0.587 * 200))


def test_scalers_are_inverse():
    config = default_digits.get_default_configs()
    x = np.linspace(0, 1, 11)
    for centered in (False, True):
        config.data.centered = centered
        y = datasets.get_data_scaler(config)(x)
        assert (y.min(), y.max()) == ((-1.0, 1.0) if centered else (0.0, 1.0))
        np.testing.assert_allclose(datasets.get_data_inverse_scaler(config)(y), x)


def small_dataset(**kwargs):
    images = np.arange(10 * 4 * 4, dtype=np.uint8).reshape(10, 4, 4, 1)
    return datasets.Dataset(datasets.ArraySource(images, np.arange(10, dtype=np.int32)), seed=3, **kwargs)


def test_batches_are_a_pure_function_of_seed_and_step_and_cover_each_epoch():
    ds = small_dataset()
    stream = ds.batches(4, start_step=0, steps_per_call=1)
    first = [next(stream)["label"][0] for _ in range(5)]
    resumed = ds.batches(4, start_step=2)
    np.testing.assert_array_equal(next(resumed)["label"][0], first[2])
    # 5 batches of 4 = 2 epochs of 10: each epoch is a permutation of all examples.
    positions = np.concatenate(first)
    assert sorted(positions[:10]) == list(range(10)) and sorted(positions[10:]) == list(range(10))
    # steps_per_call stacks consecutive steps.
    fused = next(ds.batches(4, start_step=0, steps_per_call=5))["label"]
    np.testing.assert_array_equal(fused, np.stack(first))


def test_hosts_see_disjoint_halves_of_each_global_batch():
    hosts = [small_dataset(host_index=h, host_count=2) for h in range(2)]
    single = small_dataset()
    for step in range(4):
        parts = [h.batch(step, 6)["label"] for h in hosts]
        assert len(parts[0]) == len(parts[1]) == 3
        np.testing.assert_array_equal(np.concatenate(parts), single.batch(step, 6)["label"])
    with pytest.raises(datasets.DatasetError, match="not divisible by the 2 hosts"):
        hosts[0].batch(0, 5)


def test_dequantization_flips_and_ordered_pass():
    images = np.zeros((6, 2, 3, 1), np.uint8)
    images[:, :, 0] = 255  # left column white
    ds = datasets.Dataset(datasets.ArraySource(images, np.zeros(6, np.int32)), random_flip=True,
                          uniform_dequantization=True)
    x = ds.batch(0, 6)["image"]
    assert x.dtype == np.float32
    # (pixel + U[0,1)) / 256: white in [255/256, 1), black in [0, 1/256)
    white = np.maximum(x[:, :, 0], x[:, :, 2])
    assert np.all((white >= 255 / 256) & (white < 1)) and np.all(x[:, :, 1] < 1 / 256)
    flipped = x[:, 0, 2, 0] > 0.5
    assert 0 < flipped.sum() < 6  # some flipped, some not (seeded)
    ordered = list(datasets.Dataset(datasets.ArraySource(images[:5], np.arange(5, dtype=np.int32))).ordered_batches(2))
    assert [b["label"].tolist() for b in ordered] == [[0, 1], [2, 3], [4, 4]]
    assert ordered[-1]["mask"].tolist() == [1.0, 0.0]


def write_idx(path, array):
    codes = {np.uint8: 0x08, np.int32: 0x0C}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(array.dtype.newbyteorder(">")).tobytes())


def test_fashion_mnist_reads_idx_files_from_data_dir(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 7), ("t10k", 3)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    config = default_fashion_mnist.get_default_configs()
    config.data.data_dir = str(tmp_path)
    train, test = datasets.get_dataset(config)
    assert (len(train), len(test)) == (7, 3)
    raw = datasets.read_idx(str(tmp_path / "train-images-idx3-ubyte.gz"))
    np.testing.assert_array_equal(train.images[..., 0], raw)


def test_missing_and_corrupt_sources_say_what_to_provide(tmp_path):
    config = default_fashion_mnist.get_default_configs()
    config.data.data_dir = str(tmp_path / "nowhere")
    with pytest.raises(datasets.DatasetError, match="dataset-fashion-mnist or set config.data.data_dir"):
        datasets.get_dataset(config)
    bad = tmp_path / "bad-idx.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(datasets.DatasetError, match=f"Cannot read IDX file {bad}"):
        datasets.read_idx(str(bad))
    config.data.dataset = "imagenet"
    with pytest.raises(datasets.DatasetError, match="Unknown dataset 'imagenet'.*digits"):
        datasets.get_dataset(config)


@pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST_DIR), reason="Debian dataset-fashion-mnist not installed")
def test_fashion_mnist_from_the_debian_package():
    train, test = datasets.get_dataset(default_fashion_mnist.get_default_configs())
    assert (len(train), len(test)) == (60000, 10000)
    assert np.bincount(test.labels).tolist() == [1000] * 10
