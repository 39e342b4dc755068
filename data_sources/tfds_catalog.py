"""Named public datasets read from a TFDS data dir, without a TensorFlow runtime.

A dataset prepared by TFDS (`tfds build NAME --data_dir=DIR`) lies in
DIR/NAME/VERSION/ with a dataset_info.json. It is opened with
`tfds.builder_from_directory` (no dataset code, no network) and read record by
record: array_record files through `as_data_source`, TFRecord files through
data_sources.tfrecord.RecordFile; both decode with the dataset's own
`features.deserialize_example_np`. TensorFlow is needed only to *prepare* most
datasets, never to read them.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from data_sources.base import DatasetError, parallel_map, stack_images
from data_sources.preprocess import ImageFormat
from data_sources.tfrecord import RecordFile


@dataclasses.dataclass(frozen=True)
class Entry:
    """How a score_sde dataset name maps to TFDS."""

    name: str  # TFDS name; '{category}' is replaced by config.data.category
    test_split: str = "test"
    crop: int = 0  # default centre crop before resizing (0: none)


#: score_sde's config.data.dataset spellings (lower-cased) -> TFDS.
CATALOG = {
    "cifar10": Entry("cifar10"),
    "svhn": Entry("svhn_cropped"),
    "celeba": Entry("celeb_a", test_split="validation", crop=140),
    "lsun": Entry("lsun/{category}", test_split="validation"),
}


def data_dir(config) -> str:
    """config.data.tfds_data_dir, else $TFDS_DATA_DIR, else TFDS's default ~/tensorflow_datasets."""
    return os.path.expanduser(config.data.tfds_data_dir or os.environ.get("TFDS_DATA_DIR")
                              or "~/tensorflow_datasets")


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


def prepared_dir(root: str, name: str) -> str | None:
    """root/name/<newest version> holding a dataset_info.json ('name:1.2.3' picks a version), or None."""
    name, _, version = name.partition(":")
    folder = os.path.join(root, name)
    versions = [version] if version else (os.listdir(folder) if os.path.isdir(folder) else [])
    ready = [v for v in versions if os.path.isfile(os.path.join(folder, v, "dataset_info.json"))]
    return os.path.join(folder, max(ready, key=_version_key)) if ready else None


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """One split of a prepared TFDS image dataset: its 'image' feature and its 'label' (0 if it has none)."""

    records: object  # serialized examples: __len__ and __getitems__(keys) -> list of bytes
    features: object  # the dataset's tfds.features.FeaturesDict
    fmt: ImageFormat

    def __len__(self) -> int:
        return len(self.records)

    def _example(self, record: bytes) -> tuple[np.ndarray, int]:
        example = self.features.deserialize_example_np(record)
        return self.fmt(np.asarray(example["image"])), int(np.asarray(example.get("label", 0)).reshape(-1)[0])

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        records = self.records.__getitems__([int(i) for i in indices]) if len(indices) else []
        pairs = parallel_map(self._example, records)
        return stack_images([im for im, _ in pairs], self.fmt), np.array([y for _, y in pairs], np.int32)


def open_split(root: str, name: str, split: str, fmt: ImageFormat) -> TfdsSource:
    """The prepared TFDS dataset `name` in root, split `split`; DatasetError saying how to prepare it if absent."""
    path = prepared_dir(root, name)
    if path is None:
        bare = name.partition(":")[0]
        raise DatasetError(
            f"TFDS dataset {name} is not prepared in {root}: run `tfds build {bare} --data_dir={root} "
            f"--file_format=array_record` on a machine with internet access (add --manual_dir=DIR for datasets "
            f"whose files you downloaded yourself) and copy {os.path.join(root, bare)} here, or set "
            f"config.data.tfds_data_dir (or TFDS_DATA_DIR) to the data dir that holds it.")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DatasetError(f"Reading the prepared TFDS dataset in {path} needs tensorflow-datasets: "
                           f"pip install tensorflow-datasets array-record.") from e
    builder = tfds.builder_from_directory(path)
    info = builder.info
    if split not in info.splits:
        raise DatasetError(f"TFDS dataset {name} in {path} has no split {split!r}; it has {sorted(info.splits)}.")
    if "image" not in info.features:
        raise DatasetError(f"TFDS dataset {name} has no 'image' feature (it has {sorted(info.features)}).")
    file_format = getattr(info.file_format, "value", info.file_format) or "tfrecord"
    if file_format == "array_record":
        try:
            records = builder.as_data_source(split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
        except ImportError as e:
            raise DatasetError(f"Reading {path} (array_record files) needs the array-record package: "
                               f"pip install array-record.") from e
    elif file_format == "tfrecord":
        records = RecordFile([os.fspath(p) for p in info.splits[split].filepaths])
    else:
        raise DatasetError(f"TFDS dataset {name} in {path} is stored as {file_format}; rebuild it with "
                           f"`tfds build {name.partition(':')[0]} --file_format=array_record`.")
    return TfdsSource(records, info.features, fmt)


def named(config, split: str, fmt: ImageFormat) -> TfdsSource:
    """A score_sde dataset name (CATALOG) or 'tfds:NAME[/CONFIG][:VERSION]'."""
    d = config.data
    key = d.dataset.lower()
    if key.startswith("tfds:"):
        entry = Entry(d.dataset[len("tfds:"):])
    else:
        entry = CATALOG[key]
    if "{category}" in entry.name and not d.category:
        raise DatasetError(f"config.data.dataset={d.dataset!r} needs config.data.category, e.g. 'bedroom' or "
                           f"'church_outdoor'.")
    name = entry.name.format(category=d.category)
    if entry.crop and not fmt.crop:
        fmt = dataclasses.replace(fmt, crop=entry.crop)
    return open_split(data_dir(config), name, "train" if split == "train" else entry.test_split, fmt)
