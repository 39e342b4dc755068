"""Reads PyTorch state-dict files (.pth) into numpy without importing torch.

Two layouts exist, and torch.load reads both:
  * zip (torch >= 1.6): an archive with `<prefix>/data.pkl`, a pickle of the state dict,
    and the raw bytes of storage `key` at `<prefix>/data/<key>`.
  * legacy (torch < 1.6, e.g. pt_inception-2015-12-05-6726825d.pth of 2019): one stream
    of pickles (magic number, protocol version, sys info, the state dict, the storage key
    list) followed, per key, by an int64 element count and the storage's raw bytes.
In both, a tensor is pickled as torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...) whose storage is a persistent id ('storage', torch.<Type>Storage, key,
location, numel[, view_metadata]); element (i_1..i_n) of the tensor is
storage[offset + sum_k i_k stride_k].

The unpickler resolves only those names (and collections.OrderedDict) and refuses any
other global, so reading a file never runs code from it; tensors are bounds-checked
against their storage before numpy's as_strided views them.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import struct
import zipfile

import jax.numpy as jnp
import numpy as np
_STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32, 'HalfStorage': np.float16,
    'BFloat16Storage': jnp.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001


class UnsafePickleError(pickle.UnpicklingError):
    """The file's pickle names a global outside the state-dict whitelist."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int
    offset: int = 0  # element offset of a legacy storage view into its root storage


@dataclasses.dataclass(frozen=True)
class _LazyTensor:
    storage: _StorageRef
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *unused):
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *unused):
    return data


class _Unpickler(pickle.Unpickler):

    def __init__(self, file, path):
        super().__init__(file)
        self._path = path
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module, name):
        if (module, name) == ('collections', 'OrderedDict'):
            return collections.OrderedDict
        if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
            return _rebuild_tensor_v2
        if (module, name) == ('torch._utils', '_rebuild_parameter'):
            return _rebuild_parameter
        if module == 'torch' and name in _STORAGE_DTYPES:
            return _StorageType(np.dtype(_STORAGE_DTYPES[name]))
        raise UnsafePickleError(
            f'{self._path} refers to {module}.{name}, which a tensor state dict does not use, '
            'so it is not loaded (unpickling it could run arbitrary code); pass a file written '
            'by torch.save(model.state_dict()).')

    def persistent_load(self, pid):
        pid = tuple(x.decode('ascii') if isinstance(x, bytes) else x for x in pid)
        if len(pid) not in (5, 6) or pid[0] != 'storage' or not isinstance(pid[1], _StorageType):
            raise pickle.UnpicklingError(f'unknown persistent id {pid[:2]!r}')
        _, stype, key, _, numel = pid[:5]
        view = pid[5] if len(pid) == 6 else None
        ref = self.storages.setdefault(str(key), _StorageRef(str(key), stype.dtype, int(numel)))
        if view is not None:  # legacy storage view: (view_key, element offset, view size)
            ref = _StorageRef(ref.key, ref.dtype, ref.numel, int(view[1]))
        return ref


def _materialize(t: _LazyTensor, data: np.ndarray) -> np.ndarray:
    """Copies storage[offset + sum_k i_k stride_k] into a C-contiguous array, bounds-checked."""
    if len(t.size) != len(t.stride) or min(t.size + t.stride, default=0) < 0:
        raise ValueError(f'invalid tensor geometry size={t.size} stride={t.stride}')
    start = t.storage.offset + t.offset
    if 0 in t.size:
        return np.zeros(t.size, data.dtype)
    last = start + sum((n - 1) * s for n, s in zip(t.size, t.stride))
    if start < 0 or last >= data.shape[0]:
        raise ValueError(f'a tensor reaches element {last} of storage {t.storage.key!r}, '
                         f'which holds {data.shape[0]}')
    flat = data[start:]
    return np.lib.stride_tricks.as_strided(
        flat, t.size, [s * data.itemsize for s in t.stride], writeable=False).copy()


def _tensors_to_numpy(obj, storage_data):
    if isinstance(obj, _LazyTensor):
        return _materialize(obj, storage_data[obj.storage.key])
    if isinstance(obj, dict):
        return {k: _tensors_to_numpy(v, storage_data) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_tensors_to_numpy(v, storage_data) for v in obj)
    return obj


def _storage_array(ref: _StorageRef, raw: bytes, byteorder: str) -> np.ndarray:
    dtype = ref.dtype.newbyteorder('<' if byteorder == 'little' else '>')
    if len(raw) < ref.numel * dtype.itemsize:
        raise ValueError(f'storage {ref.key!r} has {len(raw)} bytes, '
                         f'{ref.numel * dtype.itemsize} expected')
    return np.frombuffer(raw, dtype, ref.numel).astype(ref.dtype)


def _read_zip(f, path):
    with zipfile.ZipFile(f) as z:
        pkls = [n for n in z.namelist() if n.endswith('/data.pkl') and n.count('/') == 1]
        if len(pkls) != 1:
            raise ValueError(f'expected one <prefix>/data.pkl in the archive, found {pkls}')
        prefix = pkls[0][:-len('data.pkl')]
        byteorder = 'little'
        if prefix + 'byteorder' in z.namelist():
            byteorder = z.read(prefix + 'byteorder').decode('ascii').strip()
        unpickler = _Unpickler(io.BytesIO(z.read(pkls[0])), path)
        obj = unpickler.load()
        data = {key: _storage_array(ref, z.read(f'{prefix}data/{key}'), byteorder)
                for key, ref in unpickler.storages.items()}
    return obj, data


def _read_legacy(f, path):
    header = [_Unpickler(f, path).load() for _ in range(3)]
    if header[0] != _LEGACY_MAGIC or header[1] != _LEGACY_PROTOCOL:
        raise ValueError(f'bad legacy header {header[:2]!r}')
    byteorder = 'little' if header[2].get('little_endian', True) else 'big'
    unpickler = _Unpickler(f, path)
    obj = unpickler.load()
    keys = _Unpickler(f, path).load()
    data = {}
    for key in keys:
        ref = unpickler.storages[str(key)]
        (numel,) = struct.unpack('<q' if byteorder == 'little' else '>q', f.read(8))
        if numel < 0:
            raise ValueError(f'storage {key!r} claims {numel} elements')
        nbytes = numel * ref.dtype.itemsize
        data[str(key)] = _storage_array(
            _StorageRef(ref.key, ref.dtype, numel), f.read(nbytes), byteorder)
    return obj, data


def load(path):
    """Reads a torch.save'd object made of dicts, lists, tuples, numbers, strings and tensors (a state dict,
    or a training checkpoint such as score_sde's {'model', 'ema', 'optimizer', 'step'}), tensors as numpy."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'No PyTorch state dict at {path}.')
    with open(path, 'rb') as f:
        magic = f.read(4)
        f.seek(0)
        try:
            if magic == b'PK\x03\x04':
                obj, data = _read_zip(f, path)
            elif magic[:2] == b'\x80\x02':
                obj, data = _read_legacy(f, path)
            else:
                raise ValueError(
                    'it starts neither like a zip archive nor like a legacy torch pickle')
            result = _tensors_to_numpy(obj, data)
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, KeyError, ValueError,
                TypeError, AttributeError, IndexError, struct.error, UnicodeDecodeError) as e:
            raise ValueError(
                f'{path} is truncated or corrupt, or not a torch.save file '
                f'({type(e).__name__}: {e}); download or save it again.') from e
    return result


def load_state_dict(path) -> dict[str, np.ndarray]:
    """Reads a torch.save'd state dict {name: tensor} (zip or legacy layout) as numpy arrays."""
    result = load(path)
    if not isinstance(result, dict) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in result.items()):
        raise ValueError(f'{path} holds a {type(result).__name__} that is not a state dict '
                         '{name: tensor}; pass the file of a model\'s state_dict().')
    return result
