"""The real TFDS path, offline: TFDS itself prepares fashion_mnist from the official files that Debian's
dataset-fashion-mnist installs, and our pipeline reads the result without TensorFlow."""
import hashlib
import importlib.util
import os
import sys

import numpy as np
import pytest

import datasets
from configs import default_fashion_mnist
from data_sources.embedded import fashion_mnist_paths
from test_data_sources import run_with_tensorflow

# Debian rewrote the gzip headers of the official .gz files (dropped the stored file name, set its own
# mtime); the compressed streams are untouched. Restoring the original header (name + these mtimes, found by
# matching TFDS's registered SHA-256) gives back the official files byte for byte, and TFDS verifies them.
OFFICIAL_MTIME = {"train": 1504176606, "t10k": 1504176627}

PREPARE = """
import sys
import tensorflow_datasets as tfds
manual_dir, jobs = sys.argv[1], sys.argv[2:]
for data_dir, file_format, n in zip(jobs[::3], jobs[1::3], map(int, jobs[2::3])):
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, max_examples_per_split=n or None)
    tfds.builder("fashion_mnist", data_dir=data_dir, file_format=file_format).download_and_prepare(
        download_config=config)
"""

needs_files = pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST_DIR),
                                 reason="Debian's dataset-fashion-mnist is not installed")
needs_tfds = pytest.mark.skipif(importlib.util.find_spec("tensorflow_datasets") is None,
                                reason="tensorflow-datasets is not installed (pip install -r requirements.txt)")


def official_gz(debian_path, out_path, mtime):
    """Debian's .gz with the official gzip header: FNAME flag, the original mtime and file name."""
    data = open(debian_path, "rb").read()
    name = os.path.basename(debian_path)[:-len(".gz")].encode()
    header = data[:3] + b"\x08" + mtime.to_bytes(4, "little") + data[8:10] + name + b"\0"
    out_path.write_bytes(header + data[10:])


def registered_checksums():
    """{file name: sha256} of fashion_mnist in TFDS's url_checksums (read without importing TFDS)."""
    root = importlib.util.find_spec("tensorflow_datasets").submodule_search_locations[0]
    with open(os.path.join(root, "url_checksums", "fashion_mnist.txt")) as f:
        return {line.split()[3]: line.split()[2] for line in f if line.strip()}


def prepare(tmp_path, *jobs):
    """TFDS prepares fashion_mnist once per (data dir name, file format, max examples per split; 0: all)."""
    manual = tmp_path / "manual"
    manual.mkdir()
    for split, mtime in OFFICIAL_MTIME.items():
        for path in fashion_mnist_paths(datasets.FASHION_MNIST_DIR, split):
            official_gz(path, manual / os.path.basename(path), mtime)
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in manual.iterdir()}
    assert sums == registered_checksums()
    args = []
    for name, file_format, max_examples in jobs:
        args += [tmp_path / name, file_format, max_examples]
    run_with_tensorflow(PREPARE, manual, *args)


def check_against_idx(data_dir, max_examples):
    config = default_fashion_mnist.get_default_configs()
    config.data.dataset, config.data.tfds_data_dir = "tfds:fashion_mnist", str(data_dir)
    had_tensorflow = "tensorflow" in sys.modules
    splits = dict(zip(("train", "t10k"), datasets.get_dataset(config)))
    for split, ours in splits.items():
        idx_images, idx_labels = (datasets.read_idx(p) for p in fashion_mnist_paths(datasets.FASHION_MNIST_DIR, split))
        n = max_examples or len(idx_images)
        assert len(ours) == n
        images, labels = ours.images, ours.labels
        assert images.shape == (n, 28, 28, 1) and images.dtype == np.uint8
        # TFDS stores the examples in a shuffled order; pair them with the IDX files by their pixels.
        label_of = {}
        for image, label in zip(idx_images[:n], idx_labels[:n]):
            label_of.setdefault(image.tobytes(), set()).add(int(label))
        assert all(int(y) in label_of[x[..., 0].tobytes()] for x, y in zip(images, labels))
        assert sorted(x.tobytes() for x in images[..., 0]) == sorted(x.tobytes() for x in idx_images[:n])
        assert np.bincount(labels, minlength=10).tolist() == np.bincount(idx_labels[:n], minlength=10).tolist()
        first = next(ours.ordered_batches(16))
        expected = [min(label_of[np.round(x[..., 0] * 255).astype(np.uint8).tobytes()]) for x in first["image"]]
        assert first["label"].tolist() == expected
    if not had_tensorflow:
        assert "tensorflow" not in sys.modules  # reading needed no TensorFlow


@needs_files
@needs_tfds
def test_tfds_prepares_fashion_mnist_offline_and_we_read_it(tmp_path):
    """Both of TFDS's file formats: array_record (read through tfds) and tfrecord (our TFRecord reader)."""
    prepare(tmp_path, ("array_record", "array_record", 1000), ("tfrecord", "tfrecord", 200))
    check_against_idx(tmp_path / "array_record", max_examples=1000)
    check_against_idx(tmp_path / "tfrecord", max_examples=200)


@pytest.mark.slow
@needs_files
@needs_tfds
def test_tfds_full_fashion_mnist(tmp_path):
    """All 60,000 + 10,000 examples (TFDS encodes each as PNG through TensorFlow: about a minute)."""
    prepare(tmp_path, ("tfds", "array_record", 0))
    check_against_idx(tmp_path / "tfds", max_examples=0)


def test_unprepared_tfds_dataset_says_how_to_prepare_it(tmp_path):
    config = default_fashion_mnist.get_default_configs()
    config.data.dataset, config.data.tfds_data_dir = "CIFAR10", str(tmp_path)
    with pytest.raises(datasets.DatasetError, match=rf"TFDS dataset cifar10 is not prepared in {tmp_path}: run "
                       rf"`tfds build cifar10 --data_dir={tmp_path} --file_format=array_record`"):
        datasets.get_dataset(config)
    config.data.dataset = "lsun"
    with pytest.raises(datasets.DatasetError, match="needs config.data.category"):
        datasets.get_dataset(config)
    config.data.category = "church_outdoor"
    with pytest.raises(datasets.DatasetError, match="tfds build lsun/church_outdoor"):
        datasets.get_dataset(config)
