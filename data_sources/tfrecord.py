"""TFRecord files read without TensorFlow, and the CelebA-HQ / FFHQ TFRecords of progressive GAN.

A TFRecord file is a sequence of records

    [length: uint64 LE][crc32c of length: uint32][data: length bytes][crc32c of data: uint32]

and each record here is a serialized tf.train.Example:
Example{features(1): Features{feature(1): map<string, Feature>}}, with
Feature{bytes_list(1) | float_list(2) | int64_list(3)}, each a list in field 1.
Progressive GAN's dataset_tool (used by score_sde for CelebA-HQ and FFHQ)
stores one image per record as {'shape': int64 [C, H, W], 'data': bytes}.
"""
from __future__ import annotations

import glob
import os
import struct

import numpy as np

from data_sources.base import DatasetError, parallel_map, stack_images
from data_sources.preprocess import ImageFormat


class RecordFile:
    """Random access to the records of one or more TFRecord files (offsets found once, by skipping the data)."""

    def __init__(self, paths: list[str]):
        self.paths = tuple(paths)
        files, offsets, lengths = [], [], []
        for k, path in enumerate(self.paths):
            try:
                size, position = os.path.getsize(path), 0
                with open(path, "rb") as f:
                    while position < size:
                        header = f.read(12)
                        length = struct.unpack("<Q", header[:8])[0] if len(header) == 12 else -1
                        if length < 0 or position + 16 + length > size:
                            raise ValueError(f"truncated record at byte {position}")
                        files.append(k)
                        offsets.append(position + 12)
                        lengths.append(length)
                        position += 16 + length
                        f.seek(position)
            except (OSError, ValueError) as e:
                raise DatasetError(f"Cannot read TFRecord file {path}: {e}.") from e
        self._file, self._offset, self._length = np.array(files), np.array(offsets), np.array(lengths)

    def __len__(self) -> int:
        return len(self._offset)

    def __getitems__(self, keys) -> list[bytes]:
        out = []
        handles = {}
        try:
            for key in keys:
                k = int(self._file[key])
                if k not in handles:
                    handles[k] = open(self.paths[k], "rb")
                f = handles[k]
                f.seek(int(self._offset[key]))
                out.append(f.read(int(self._length[key])))
        finally:
            for f in handles.values():
                f.close()
        return out


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of a protobuf message; value is an int (varint) or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + width], pos + width
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _feature_values(feature: bytes):
    for kind, _, values in _fields(feature):
        items = [(wire, v) for _, wire, v in _fields(values)]
        if kind == 1:
            return [v for _, v in items]
        if kind == 2:
            return np.concatenate([np.frombuffer(v, "<f4") for _, v in items]) if items else np.zeros(0, np.float32)
        if kind == 3:
            ints = []
            for wire, v in items:
                if wire == 0:
                    ints.append(v)
                else:  # packed
                    pos = 0
                    while pos < len(v):
                        x, pos = _varint(v, pos)
                        ints.append(x)
            return np.array(ints, np.uint64).astype(np.int64)
    return []


def parse_example(record: bytes) -> dict:
    """A serialized tf.train.Example -> {name: list of bytes | float32 array | int64 array}."""
    out = {}
    for number, _, features in _fields(record):
        if number != 1:
            continue
        for _, _, entry in _fields(features):
            fields = {n: v for n, _, v in _fields(entry)}
            out[bytes(fields.get(1, b"")).decode()] = _feature_values(fields.get(2, b""))
    return out


class ProganSource:
    """Progressive GAN TFRecords: one CHW uint8 image per record; label 0."""

    def __init__(self, records: RecordFile, fmt: ImageFormat):
        self.records, self.fmt = records, fmt

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, record: bytes) -> np.ndarray:
        try:
            example = parse_example(record)
            shape = tuple(int(n) for n in example["shape"])
            return np.frombuffer(example["data"][0], np.uint8).reshape(shape).transpose(1, 2, 0)
        except (KeyError, IndexError, ValueError) as e:
            raise DatasetError(f"A record of {', '.join(self.records.paths)} is not a progressive-GAN image "
                               f"({{'shape', 'data'}}): {e}.") from e

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        records = self.records.__getitems__(indices)
        images = parallel_map(lambda r: self.fmt(self._image(r)), records)
        return stack_images(images, self.fmt), np.zeros(len(records), np.int32)


def progan(config, split: str, fmt: ImageFormat):
    """CelebA-HQ / FFHQ: config.data.tfrecords_path (a file or glob, as in score_sde), else an image folder
    at config.data.path. Both splits read the same data, as in score_sde."""
    from data_sources.local import folder_source

    d = config.data
    if d.tfrecords_path:
        paths = sorted(glob.glob(os.path.expanduser(d.tfrecords_path)))
        if not paths:
            raise DatasetError(f"No TFRecord file matches config.data.tfrecords_path={d.tfrecords_path!r}.")
        return ProganSource(RecordFile(paths), fmt)
    if d.path:
        return folder_source(os.path.expanduser(d.path), fmt)
    raise DatasetError(f"config.data.dataset={d.dataset!r} is read from prepared TFRecords or an image folder: "
                       f"set config.data.tfrecords_path (e.g. ffhq-r08.tfrecords) or config.data.path.")
