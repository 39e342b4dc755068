"""Local sources (folder, npz, IDX), progressive-GAN TFRecords, host sharding and resume, on small written data."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import datasets
from configs import default_digits
from data_sources import tfrecord
from test_datasets import write_idx


def local_config(dataset, path, size=8, channels=3, **data):
    config = default_digits.get_default_configs()
    config.data.dataset, config.data.path = dataset, str(path)
    config.data.image_size, config.data.num_channels = size, channels
    for key, value in data.items():
        config.data[key] = value
    return config


def write_folder(root, rng, n_per_class=3):
    """Class folders 'cat' and 'dog' of PNGs and JPEGs of assorted sizes, plus one PNG at the top level."""
    expected = {}
    for label, name in ((1, "cat"), (2, "dog")):
        os.makedirs(root / name)
        for k in range(n_per_class):
            pixels = rng.integers(0, 256, (8 + 4 * k, 8 + 2 * k, 3), dtype=np.uint8)
            ext = "png" if k % 2 == 0 else "jpg"
            Image.fromarray(pixels).save(root / name / f"{k}.{ext}")
            expected[f"{name}/{k}.{ext}"] = (label, pixels)
    exact = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(exact).save(root / "top.png")
    expected["top.png"] = (0, exact)
    (root / "notes.txt").write_text("not an image")
    return expected


def test_folder_of_images_any_size_with_subfolder_labels(tmp_path):
    expected = write_folder(tmp_path, np.random.default_rng(0))
    train, test = datasets.get_dataset(local_config("folder", tmp_path))
    assert len(train) == len(test) == 7  # no eval_path: the test split is the training data
    images, labels = train.images, train.labels
    assert images.shape == (7, 8, 8, 3) and images.dtype == np.uint8
    # Sorted relative paths: cat/0.png cat/1.jpg cat/2.png dog/... top.png; labels: '' -> 0, cat -> 1, dog -> 2.
    assert labels.tolist() == [1, 1, 1, 2, 2, 2, 0]
    np.testing.assert_array_equal(images[-1], expected["top.png"][1])  # an 8x8 PNG is read losslessly


def test_non_square_images_keep_their_aspect_and_crop_the_centre(tmp_path):
    stripes = np.zeros((16, 48, 3), np.uint8)
    stripes[:, :16, 0] = stripes[:, 16:32, 1] = stripes[:, 32:, 2] = 255  # red | green | blue
    Image.fromarray(stripes).save(tmp_path / "wide.png")
    Image.fromarray(stripes.transpose(1, 0, 2)).save(tmp_path / "tall.png")
    images = datasets.get_dataset(local_config("folder", tmp_path))[0].images
    # Short side 16 -> 8, so the 48 pixels become 24 and the centre 8 are the green stripe.
    centre = images[:, 2:6, 2:6].astype(int)
    assert np.all(centre[..., 1] >= 250) and np.all(centre[..., [0, 2]] <= 5)
    # An explicit centre crop (as CelebA's 140) is taken before resizing: 12 x 12 of a 16 x 48 image.
    cropped = datasets.get_dataset(local_config("folder", tmp_path, size=12, crop_size=12))[0].images
    np.testing.assert_array_equal(cropped[1], stripes[2:14, 18:30])


def test_gray_folder_and_channel_conversion(tmp_path):
    gray = np.random.default_rng(1).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    as_gray = datasets.get_dataset(local_config("folder", tmp_path, channels=1))[0].images
    as_rgb = datasets.get_dataset(local_config("folder", tmp_path, channels=3))[0].images
    np.testing.assert_array_equal(as_gray[0, ..., 0], gray)
    np.testing.assert_array_equal(as_rgb[0], np.repeat(gray[..., None], 3, -1))


def test_npz_with_and_without_labels_and_a_separate_test_file(tmp_path):
    rng = np.random.default_rng(2)
    train_images = rng.integers(0, 256, (5, 8, 8), dtype=np.uint8)
    test_images = rng.integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "train.npz", image=train_images, label=np.arange(5) + 3)
    np.savez(tmp_path / "test.npz", image=test_images)
    config = local_config("npz", tmp_path / "train.npz", channels=1, eval_path=str(tmp_path / "test.npz"))
    train, test = datasets.get_dataset(config)
    np.testing.assert_array_equal(train.images[..., 0], train_images)
    assert train.labels.tolist() == [3, 4, 5, 6, 7] and train.labels.dtype == np.int32
    np.testing.assert_array_equal(test.images, test_images)
    assert test.labels.tolist() == [0, 0, 0]
    np.savez(tmp_path / "floats.npz", image=np.zeros((2, 8, 8), np.float32))
    with pytest.raises(datasets.DatasetError, match=r"floats.npz must be uint8 .* got float32"):
        datasets.get_dataset(local_config("npz", tmp_path / "floats.npz"))
    np.savez(tmp_path / "other.npz", x=train_images)
    with pytest.raises(datasets.DatasetError, match=r"other.npz: it holds no 'image' array"):
        datasets.get_dataset(local_config("npz", tmp_path / "other.npz"))


def test_idx_files_with_matching_labels_file(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "emnist-letters-train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "emnist-letters-train-labels-idx1-ubyte.gz", np.arange(6, dtype=np.uint8))
    train, _ = datasets.get_dataset(local_config("idx", tmp_path / "emnist-letters-train-images-idx3-ubyte.gz",
                                                 size=28, channels=1))
    np.testing.assert_array_equal(train.images[..., 0], images)
    assert train.labels.tolist() == list(range(6))
    write_idx(tmp_path / "alone-images-idx3-ubyte.gz", images[:2])  # no labels file: label 0
    assert datasets.get_dataset(local_config("idx", tmp_path / "alone-images-idx3-ubyte.gz", size=28,
                                             channels=1))[0].labels.tolist() == [0, 0]


def test_bad_local_files_name_the_file(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(datasets.DatasetError, match=f"Cannot read image {tmp_path / 'broken.png'}"):
        datasets.get_dataset(local_config("folder", tmp_path))
    np.savez(tmp_path / "data.npz", image=np.zeros((50, 8, 8), np.uint8))
    raw = (tmp_path / "data.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(datasets.DatasetError, match=f"Cannot read .npz file {tmp_path / 'cut.npz'}"):
        datasets.get_dataset(local_config("npz", tmp_path / "cut.npz"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(datasets.DatasetError, match=f"No image files .* found in {tmp_path / 'empty'}"):
        datasets.get_dataset(local_config("folder", tmp_path / "empty"))
    with pytest.raises(datasets.DatasetError, match="set config.data.path"):
        datasets.get_dataset(local_config("npz", ""))


class CountingSource(datasets.ArraySource):
    """An in-memory source that records which examples were read."""

    def read(self, indices):
        self.reads.extend(np.asarray(indices).tolist())
        return super().read(indices)


def counting_source(n):
    source = CountingSource(np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1), np.arange(n, dtype=np.int32))
    object.__setattr__(source, "reads", [])
    return source


def test_two_hosts_read_disjoint_complete_halves():
    n, global_batch = 24, 8
    sources = [counting_source(n) for _ in range(2)]
    hosts = [datasets.Dataset(s, seed=5, host_index=h, host_count=2) for h, s in enumerate(sources)]
    for h in hosts:  # one epoch: 3 steps of 8, each host reading 4 examples a step
        for step in range(n // global_batch):
            assert len(h.batch(step, global_batch)["label"]) == global_batch // 2
    reads = [set(s.reads) for s in sources]
    assert len(sources[0].reads) == len(sources[1].reads) == n // 2  # each host read only its half
    assert not reads[0] & reads[1] and reads[0] | reads[1] == set(range(n))
    # The ordered evaluation pass: the real (unmasked) examples of the two hosts are disjoint and complete.
    seen = [[], []]
    for h, host in enumerate(hosts):
        for batch in host.ordered_batches(10):
            seen[h] += batch["label"][batch["mask"] > 0].tolist()
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(n))


def test_resume_gives_the_same_batches_from_a_lazy_source(tmp_path):
    write_folder(tmp_path, np.random.default_rng(4), n_per_class=5)
    config = local_config("folder", tmp_path, random_flip=True, uniform_dequantization=True)
    config.training.n_jitted_steps = 2
    train, _ = datasets.get_dataset(config)
    first = next(train.batches(4, start_step=0, steps_per_call=6))
    resumed, _ = datasets.get_dataset(config)  # a fresh process would rebuild the dataset like this
    later = next(resumed.batches(4, start_step=4, steps_per_call=2))
    for key in ("image", "label"):
        np.testing.assert_array_equal(later[key], first[key][4:6])
    assert not np.array_equal(first["image"][0], first["image"][1])


def run_with_tensorflow(script, *args):
    """Run a Python script in a subprocess with TensorFlow (kept out of this process, which must not need it)."""
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed (pip install -r requirements-test.txt); it writes the test data")
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES=""))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


WRITE_PROGAN_TFRECORDS = """
import sys
import numpy as np
import tensorflow as tf
images = np.load(sys.argv[1])["image"]
with tf.io.TFRecordWriter(sys.argv[2]) as writer:
    for im in images:  # progressive GAN's dataset_tool: CHW uint8 bytes and their shape
        chw = im.transpose(2, 0, 1)
        feature = {"shape": tf.train.Feature(int64_list=tf.train.Int64List(value=chw.shape)),
                   "data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[chw.tobytes()])),
                   "extra": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5, -2.0])),
                   "signed": tf.train.Feature(int64_list=tf.train.Int64List(value=[-3, 2**40]))}
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
"""


def test_progressive_gan_tfrecords_written_by_tensorflow(tmp_path):
    images = np.random.default_rng(6).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", image=images)
    run_with_tensorflow(WRITE_PROGAN_TFRECORDS, tmp_path / "images.npz", tmp_path / "ffhq-r04.tfrecords")
    config = local_config("FFHQ", "", size=16, tfrecords_path=str(tmp_path / "ffhq-r*.tfrecords"))
    train, test = datasets.get_dataset(config)
    np.testing.assert_array_equal(train.images, images)
    assert len(test) == 5 and train.labels.tolist() == [0] * 5
    record = tfrecord.RecordFile([str(tmp_path / "ffhq-r04.tfrecords")]).__getitems__([2])[0]
    example = tfrecord.parse_example(record)
    assert example["shape"].tolist() == [3, 16, 16] and example["signed"].tolist() == [-3, 2**40]
    np.testing.assert_array_equal(example["extra"], np.array([0.5, -2.0], np.float32))
    small = datasets.get_dataset(local_config("CelebAHQ", "", size=8, channels=1,
                                              tfrecords_path=str(tmp_path / "ffhq-r04.tfrecords")))[0]
    assert small.images.shape == (5, 8, 8, 1)


def test_truncated_tfrecord_and_missing_paths_are_named(tmp_path):
    path = tmp_path / "cut.tfrecords"
    path.write_bytes((100).to_bytes(8, "little") + b"\0" * 4 + b"x" * 50)  # a 100-byte record cut at 50
    with pytest.raises(datasets.DatasetError, match=f"Cannot read TFRecord file {path}: truncated record at byte 0"):
        datasets.get_dataset(local_config("FFHQ", "", tfrecords_path=str(path)))
    with pytest.raises(datasets.DatasetError, match="No TFRecord file matches config.data.tfrecords_path"):
        datasets.get_dataset(local_config("FFHQ", "", tfrecords_path=str(tmp_path / "none-*.tfrecords")))
    with pytest.raises(datasets.DatasetError, match="set config.data.tfrecords_path .* or config.data.path"):
        datasets.get_dataset(local_config("celebahq", ""))
