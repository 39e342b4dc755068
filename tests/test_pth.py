"""models.pth: torch-free reading of .pth state dicts and the FID Inception weight mapping.

The files are made by a minimal writer below that emits, opcode by opcode, the pickle
torch.save produces (protocol 2; tensors as torch._utils._rebuild_tensor_v2 calls whose
storages are persistent ids), in both the zip layout (torch >= 1.6) and the legacy one
(torch < 1.6, the layout of pt_inception-2015-12-05-6726825d.pth, released in 2019).
"""
import ast
import collections
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from evaluation import fid_weights, inception
from models import pth

KEYS_FILE = Path(__file__).parent / 'data' / 'pt_inception-2015-12-05_keys.txt'
_STORAGE_NAMES = {np.dtype(np.float32): 'FloatStorage', np.dtype(np.float16): 'HalfStorage',
                  np.dtype(np.float64): 'DoubleStorage', np.dtype(np.int64): 'LongStorage',
                  np.dtype(np.int32): 'IntStorage', np.dtype(np.uint8): 'ByteStorage',
                  np.dtype(np.bool_): 'BoolStorage'}


class TensorSpec(collections.namedtuple('TensorSpec', 'storage_key offset size stride')):
    """A tensor as torch pickles it: a view (offset, size, stride) into a named storage."""


class _Pickle:
    """Writes pickle protocol-2 opcodes (see pickletools) for a state dict of tensors."""

    def __init__(self):
        self.out = bytearray(b'\x80\x02')                        # PROTO 2

    def glob(self, module, name):
        self.out += b'c' + f'{module}\n{name}\n'.encode()         # GLOBAL

    def str(self, s):
        b = s.encode()
        self.out += b'X' + struct.pack('<I', len(b)) + b         # BINUNICODE

    def int(self, n):
        self.out += b'J' + struct.pack('<i', n)                  # BININT

    def tuple(self, items):
        self.out += b'('                                         # MARK
        for item in items:
            self.int(item) if isinstance(item, int) else self.str(item)
        self.out += b't'                                         # TUPLE

    def empty_ordered_dict(self):
        self.glob('collections', 'OrderedDict')
        self.out += b')R'                                        # EMPTY_TUPLE, REDUCE

    def tensor(self, spec, storage, legacy):
        self.glob('torch._utils', '_rebuild_tensor_v2')
        self.out += b'(('                                        # args tuple, pid tuple
        self.str('storage')
        self.glob('torch', _STORAGE_NAMES[storage.dtype])
        self.str(spec.storage_key)
        self.str('cpu')
        self.int(storage.size)
        if legacy:
            self.out += b'N'                                     # view_metadata None
        self.out += b'tQ'                                        # TUPLE, BINPERSID
        self.int(spec.offset)
        self.tuple(spec.size)
        self.tuple(spec.stride)
        self.out += b'\x89'                                      # NEWFALSE (requires_grad)
        self.empty_ordered_dict()                                # backward_hooks
        self.out += b'tR'                                        # TUPLE, REDUCE


def state_dict_pickle(tensors, storages, legacy=False, metadata=True):
    """OrderedDict{name: tensor}, with the `_metadata` attribute a module's state_dict()
    carries (restored by BUILD) when metadata is True."""
    p = _Pickle()
    p.empty_ordered_dict()
    p.out += b'('                                                # MARK
    for name, spec in tensors.items():
        p.str(name)
        p.tensor(spec, storages[spec.storage_key], legacy)
    p.out += b'u'                                                # SETITEMS
    if metadata:
        p.out += b'}'                                            # EMPTY_DICT
        p.str('_metadata')
        p.empty_ordered_dict()
        p.str('')
        p.out += b'}'
        p.str('version')
        p.int(1)
        p.out += b'ss'                                           # SETITEM x2
        p.out += b's' + b'b'                                     # SETITEM, BUILD
    return bytes(p.out + b'.')                                   # STOP


def fid_inception_torch_shapes() -> dict:
    """{pytorch-fid state-dict key: torch shape} that FIDInceptionV3's variables map to."""
    return {k: shape for k, (_, shape) in fid_weights.fid_key_map().items()}


def write_pth(path, tensors, storages, layout='zip'):
    """torch.save's file layouts; storages: {key: 1-D little-endian numpy array}."""
    if layout == 'zip':
        with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as z:
            z.writestr('archive/data.pkl', state_dict_pickle(tensors, storages))
            z.writestr('archive/byteorder', 'little')
            for key, data in storages.items():
                z.writestr(f'archive/data/{key}', data.tobytes())
            z.writestr('archive/version', '3\n')
        return
    with open(path, 'wb') as f:
        for header in (0x1950a86a20f9469cfc6c, 1001,
                       {'protocol_version': 1001, 'little_endian': True,
                        'type_sizes': {'short': 2, 'int': 4, 'long': 4}}):
            pickle.dump(header, f, protocol=2)
        f.write(state_dict_pickle(tensors, storages, legacy=True))
        pickle.dump(list(storages), f, protocol=2)
        for data in storages.values():
            f.write(struct.pack('<q', data.size) + data.tobytes())


def contiguous(key, shape):
    strides = np.cumprod((1,) + tuple(shape[::-1]))[:-1][::-1]
    return TensorSpec(key, 0, tuple(shape), tuple(int(s) for s in strides))


def _mixed_tensors():
    """Specs, their storages, and the arrays torch would give, built independently by numpy."""
    rng = np.random.default_rng(0)
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    storages = {
        '0': base.ravel(),
        '1': rng.normal(size=6).astype(np.float16),
        '2': np.array([1, -2, 3**30, 7], dtype=np.int64),
        '3': np.array([True, False, True]),
        '4': np.zeros(0, np.float32),
    }
    specs = {
        'weight': contiguous('0', (4, 6)),
        'weight_t': TensorSpec('0', 0, (6, 4), (1, 6)),         # base.T, not contiguous
        'slice': TensorSpec('0', 6, (3, 3), (6, 2)),            # base[1:, ::2], shared storage
        'half': TensorSpec('1', 1, (5,), (1,)),
        'long': contiguous('2', (2, 2)),
        'count': TensorSpec('2', 3, (), ()),                    # a 0-d num_batches_tracked
        'mask': contiguous('3', (3,)),
        'empty': TensorSpec('4', 0, (0, 3), (3, 1)),
    }
    expected = {
        'weight': base, 'weight_t': base.T, 'slice': base[1:, ::2],
        'half': storages['1'][1:], 'long': storages['2'].reshape(2, 2),
        'count': np.array(7, np.int64), 'mask': storages['3'],
        'empty': np.zeros((0, 3), np.float32),
    }
    return specs, storages, expected


@pytest.mark.parametrize('layout', ['zip', 'legacy'])
def test_round_trip_dtypes_strides_and_shared_storage(tmp_path, layout):
    specs, storages, expected = _mixed_tensors()
    path = tmp_path / f'mixed_{layout}.pth'
    write_pth(path, specs, storages, layout)
    got = pth.load_state_dict(path)
    assert list(got) == list(expected)
    for name, want in expected.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)
        assert got[name].flags.c_contiguous and got[name].flags.owndata, name


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        pth.load_state_dict(tmp_path / 'absent.pth')


@pytest.mark.parametrize('layout,cut', [('zip', 0.5), ('zip', 0.95), ('legacy', 0.5),
                                        ('legacy', 0.99), ('legacy', 0.02)])
def test_truncated_file_is_one_clear_error(tmp_path, layout, cut):
    specs, storages, _ = _mixed_tensors()
    path = tmp_path / 'model.pth'
    write_pth(path, specs, storages, layout)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(ValueError, match=r'model.pth is truncated or corrupt'):
        pth.load_state_dict(path)


def test_garbage_and_non_state_dict_files(tmp_path):
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(b'<html>404 Not Found</html>')
    with pytest.raises(ValueError, match='junk.pth is truncated or corrupt'):
        pth.load_state_dict(junk)
    listing = tmp_path / 'list.pth'
    with zipfile.ZipFile(listing, 'w') as z:
        z.writestr('archive/data.pkl', pickle.dumps([1, 2], protocol=2))
    with pytest.raises(ValueError, match='list.pth holds a list that is not a state dict'):
        pth.load_state_dict(listing)


def test_tensor_beyond_its_storage_is_rejected(tmp_path):
    """A corrupt size/stride must not make as_strided read past the storage."""
    storages = {'0': np.arange(6, dtype=np.float32)}
    path = tmp_path / 'overrun.pth'
    write_pth(path, {'w': TensorSpec('0', 2, (3, 2), (2, 1))}, storages)
    with pytest.raises(ValueError, match='overrun.pth is truncated or corrupt.*element 7'):
        pth.load_state_dict(path)


def test_foreign_globals_are_refused_without_running_them(tmp_path):
    marker = tmp_path / 'ran'

    class Payload:
        def __reduce__(self):
            return os.system, (f'touch {marker}',)

    path = tmp_path / 'evil.pth'
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr('archive/data.pkl', pickle.dumps({'w': Payload()}, protocol=2))
    with pytest.raises(pth.UnsafePickleError, match=r'evil.pth refers to (posix|nt|os)\.system'):
        pth.load_state_dict(path)
    assert not marker.exists()


# --- the pytorch-fid weight file ------------------------------------------------------------

def _reference_keys():
    rows = [line.split(' ', 1) for line in KEYS_FILE.read_text().splitlines()
            if line and not line.startswith('#')]
    return {key: ast.literal_eval(shape) for key, shape in rows}


def test_flax_variables_map_onto_exactly_the_pytorch_fid_keys():
    reference = _reference_keys()
    assert len(reference) == 566
    counters = {k for k in reference if k.endswith('.num_batches_tracked')}
    assert len(counters) == 94 and all(reference[k] == () for k in counters)
    mapped = fid_inception_torch_shapes()   # from jax.eval_shape of FIDInceptionV3.init
    assert mapped == {k: v for k, v in reference.items() if k not in counters}
    assert counters == {k.replace('running_mean', 'num_batches_tracked')
                        for k in mapped if k.endswith('.running_mean')}


def test_missing_weights_say_what_to_provide(tmp_path):
    missing = tmp_path / 'weights' / 'inception.pth'
    with pytest.raises(FileNotFoundError) as e:
        fid_weights.load_fid_inception_params(missing)
    assert str(e.value) == (
        f'FID Inception weights not found at {missing}: download '
        'pt_inception-2015-12-05-6726825d.pth (the pytorch-fid weights) and pass its path '
        'with config.eval.inception_path.')


def test_load_fid_inception_params_maps_every_tensor(tmp_path):
    """A file with the real file's keys and shapes (legacy layout, float32 weights, int64
    counters) and distinct random values, read into the Flax tree."""
    rng = np.random.default_rng(1)
    specs, storages = {}, {}
    for i, (key, shape) in enumerate(_reference_keys().items()):
        if key.endswith('num_batches_tracked'):
            storages[str(i)] = np.array([i], np.int64)
        else:
            storages[str(i)] = rng.standard_normal(int(np.prod(shape)), dtype=np.float32)
        specs[key] = contiguous(str(i), shape)
    path = tmp_path / 'pt_inception.pth'
    write_pth(path, specs, storages, layout='legacy')
    variables = fid_weights.load_fid_inception_params(path)

    abstract = inception.abstract_variables()
    shapes = lambda tree: {k: np.shape(v) for k, v in _flatten(tree).items()}
    assert shapes(variables) == shapes(abstract)
    assert all(v.dtype == np.float32 for v in _flatten(variables).values())

    def torch_value(key):
        spec = specs[key]
        return storages[spec.storage_key].reshape(spec.size)

    params, stats = variables['params'], variables['batch_stats']
    for block, unit in [('Conv2d_1a_3x3', None), ('Mixed_6b', 'branch7x7_2'),
                        ('Mixed_7c', 'branch3x3dbl_3b')]:
        prefix = block if unit is None else f'{block}.{unit}'
        p = params[block] if unit is None else params[block][unit]
        s = stats[block] if unit is None else stats[block][unit]
        np.testing.assert_array_equal(p['conv']['kernel'],
                                      torch_value(f'{prefix}.conv.weight').transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(p['bn']['scale'], torch_value(f'{prefix}.bn.weight'))
        np.testing.assert_array_equal(p['bn']['bias'], torch_value(f'{prefix}.bn.bias'))
        np.testing.assert_array_equal(s['bn']['mean'], torch_value(f'{prefix}.bn.running_mean'))
        np.testing.assert_array_equal(s['bn']['var'], torch_value(f'{prefix}.bn.running_var'))
    assert params['Mixed_6b']['branch7x7_2']['conv']['kernel'].shape == (1, 7, 128, 128)
    np.testing.assert_array_equal(params['fc']['kernel'], torch_value('fc.weight').T)
    np.testing.assert_array_equal(params['fc']['bias'], torch_value('fc.bias'))


def test_wrong_state_dict_lists_missing_unexpected_and_misshapen_keys(tmp_path):
    storages = {'0': np.zeros(32 * 3 * 5 * 5, np.float32), '1': np.zeros(4, np.float32)}
    specs = {'Conv2d_1a_3x3.conv.weight': contiguous('0', (32, 3, 5, 5)),
             'AuxLogits.fc.weight': contiguous('1', (2, 2))}
    path = tmp_path / 'resnet.pth'
    write_pth(path, specs, storages)
    with pytest.raises(ValueError) as e:
        fid_weights.load_fid_inception_params(path)
    message = str(e.value)
    assert message.startswith(f'{path} is not the FID Inception-v3 state dict: 471 missing keys: ')
    assert 'and 463 more' in message
    assert '1 unexpected keys: AuxLogits.fc.weight' in message
    assert ('1 wrong shapes: Conv2d_1a_3x3.conv.weight (32, 3, 5, 5) (expected (32, 3, 3, 3))'
            in message)
    assert message.endswith('Pass pt_inception-2015-12-05-6726825d.pth (the pytorch-fid weights) '
                            'with config.eval.inception_path.')


def _flatten(tree, prefix=()):
    if isinstance(tree, dict):
        return {k: v for name, sub in tree.items()
                for k, v in _flatten(sub, prefix + (name,)).items()}
    return {prefix: tree}
