"""The pytorch-fid Inception-v3 weight file (a .pth read without torch, models/pth.py) as the variables of
evaluation.inception.FIDInceptionV3."""
from __future__ import annotations

import os

import numpy as np
from flax import traverse_util

from evaluation import inception
from models.convert import listing, torch_layout
from models.pth import load_state_dict

FID_WEIGHTS_NAME = 'pt_inception-2015-12-05-6726825d.pth'
# (variable collection, Flax leaf name) -> PyTorch leaf name.
_LEAF_NAMES = {
    ('params', 'kernel'): 'weight', ('params', 'scale'): 'weight', ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean', ('batch_stats', 'var'): 'running_var',
}


def fid_key_map() -> dict[str, tuple[tuple, tuple]]:
    """{torch key: (Flax variable path, torch shape)}, e.g. 'Mixed_5b.branch1x1.conv.weight'
    -> (('params', 'Mixed_5b', 'branch1x1', 'conv', 'kernel'), (64, 192, 1, 1))."""
    flat = traverse_util.flatten_dict(inception.abstract_variables())
    return {'.'.join(p[1:-1] + (_LEAF_NAMES[p[0], p[-1]],)): (p, torch_layout(v.shape))
            for p, v in flat.items()}


def load_fid_inception_params(path) -> dict:
    """Variables {'params', 'batch_stats'} of evaluation.inception.FIDInceptionV3 from the
    pytorch-fid weight file: conv weight OIHW -> kernel HWIO, fc weight (out, in) -> kernel
    (in, out), BatchNorm weight/bias/running_mean/running_var -> scale/bias/mean/var, as
    float32 numpy. The BatchNorm num_batches_tracked counters are accepted and ignored."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'FID Inception weights not found at {path}: download {FID_WEIGHTS_NAME} (the '
            'pytorch-fid weights) and pass its path with config.eval.inception_path.')
    state = load_state_dict(path)
    key_map = fid_key_map()
    ignored = {k.replace('.running_mean', '.num_batches_tracked')
               for k in key_map if k.endswith('.running_mean')}
    missing = [k for k in key_map if k not in state]
    unexpected = [k for k in state if k not in key_map and k not in ignored]
    wrong = [f'{k} {state[k].shape} (expected {shape})' for k, (_, shape) in key_map.items()
             if k in state and state[k].shape != shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f'{path} is not the FID Inception-v3 state dict: '
            + '; '.join(listing(what, items, limit=8) for what, items in (
                ('missing keys', missing), ('unexpected keys', unexpected),
                ('wrong shapes', wrong)) if items)
            + f'. Pass {FID_WEIGHTS_NAME} (the pytorch-fid weights) with '
            'config.eval.inception_path.')
    variables = {}
    for key, (flax_path, _) in key_map.items():
        value = state[key]
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)
        elif value.ndim == 2:
            value = value.T
        variables[flax_path] = np.ascontiguousarray(value, dtype=np.float32)
    return traverse_util.unflatten_dict(variables)
