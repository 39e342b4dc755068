"""PyTorch state dicts <-> Flax parameter trees, by one naming rule, and safetensors files read without torch.

The networks that mirror a PyTorch reference (Stable Diffusion's components, score_sde_pytorch's models) name
their submodules after the reference's attributes, so that converting is mechanical:

    torch key   'down_blocks.0.resnets.1.conv1.weight'
    Flax path   ('down_blocks_0', 'resnets_1', 'conv1', 'kernel')

A numeric key component (an index into a ModuleList / Sequential) joins the name before it with '_'; the leaf
'weight' becomes whichever of 'kernel' (Conv / Dense), 'scale' (norms) or 'embedding' (nn.Embed) the Flax module
has; 'bias' stays. Layouts: a conv weight (O, I, kh, kw) becomes a kernel (kh, kw, I, O), a linear weight
(O, I) a kernel (I, O); everything else is copied. A transposed conv is not covered (none of the mirrored
networks has one).
"""
from __future__ import annotations

import json
import os
import re

import jax
import numpy as np
from flax import traverse_util

_WEIGHT_LEAVES = ("kernel", "scale", "embedding")


class ConversionError(ValueError):
    """A reference checkpoint does not describe the network it is loaded into."""


def torch_key_to_path(key: str) -> tuple[str, ...]:
    """'a.b.0.c.weight' -> ('a', 'b_0', 'c', 'weight'): numeric components join the name before them."""
    path: list[str] = []
    for part in key.split("."):
        if part.isdigit() and path:
            path[-1] = f"{path[-1]}_{part}"
        else:
            path.append(part)
    return tuple(path)


def torch_layout(kernel_shape: tuple) -> tuple:
    """The PyTorch shape of a Flax kernel: (kh, kw, I, O) -> (O, I, kh, kw); (I, O) -> (O, I)."""
    if len(kernel_shape) == 4:
        return (kernel_shape[3], kernel_shape[2], kernel_shape[0], kernel_shape[1])
    return tuple(reversed(kernel_shape))


def _to_flax(leaf: str, array: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and array.ndim == 4:
        return np.transpose(array, (2, 3, 1, 0))
    if leaf == "kernel" and array.ndim == 2:
        return array.T
    return array


def listing(what: str, items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")
    return f"{len(items)} {what}: {shown}"


def torch_to_flax(tensors: dict[str, np.ndarray], target, source: str = "the checkpoint",
                  ignore: str | None = None, names: dict[str, str] | None = None):
    """Flax params shaped like `target` (a param tree of arrays or ShapeDtypeStructs) filled from `tensors`.

    Every target leaf must be matched by exactly one tensor of the right shape, and every tensor must be used
    (keys matching the regular expression `ignore` excepted); otherwise a ConversionError lists the missing
    parameters (as Flax paths joined by '.'), the unexpected and the misshapen tensors (in PyTorch's naming;
    `names` maps a key to the name to report, for keys renamed before the call), and `source` says where
    they came from.
    """
    names = names or {}
    flat_target = traverse_util.flatten_dict(target)
    by_module: dict[tuple, set] = {}
    for path in flat_target:
        by_module.setdefault(path[:-1], set()).add(path[-1])
    out, unexpected, misshapen, used = {}, [], [], set()
    for key, array in tensors.items():
        if ignore is not None and re.search(ignore, key):
            continue
        *module, leaf = torch_key_to_path(key)
        module = tuple(module)
        if leaf == "weight":
            leaf = next((name for name in _WEIGHT_LEAVES if name in by_module.get(module, ())), "weight")
        path = module + (leaf,)
        if path not in flat_target:
            unexpected.append(names.get(key, key))
            continue
        want = tuple(flat_target[path].shape)
        value = _to_flax(leaf, np.asarray(array))
        if tuple(value.shape) != want:
            torch_want = torch_layout(want) if leaf == "kernel" else want
            misshapen.append(f"{names.get(key, key)} {tuple(np.shape(array))} (the network has {torch_want})")
            continue
        out[path] = value.astype(flat_target[path].dtype)
        used.add(path)
    missing = [".".join(p) for p in flat_target if p not in used]
    problems = [listing(what, items) for what, items in (("missing", missing), ("unexpected", unexpected),
                                                         ("of the wrong shape", misshapen)) if items]
    if problems:
        raise ConversionError(f"{source} does not match the network: " + "; ".join(problems) + ".")
    return traverse_util.unflatten_dict(out)


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """All tensors of a .safetensors file as numpy arrays (bfloat16 / float16 widened to float32)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not os.path.isfile(path):
        raise ConversionError(f"{path} does not exist.")
    try:
        tensors = load_file(path)
    except (SafetensorError, ValueError, OSError) as err:
        raise ConversionError(f"{path} is not a readable safetensors file ({err}).") from None
    return {k: v.astype(np.float32) if v.dtype.kind == "f" and v.dtype.itemsize < 4 else v
            for k, v in tensors.items()}


WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors",
                "diffusion_pytorch_model.fp16.safetensors", "model.fp16.safetensors")


def read_diffusers_folder(folder: str, class_name: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(config dict, tensors) of a diffusers / transformers component folder (what `save_pretrained` writes:
    config.json and one of WEIGHT_FILES), checking that config.json's `_class_name` is `class_name`."""
    if not os.path.isdir(folder):
        raise ConversionError(f"{folder} is not a folder; point at a diffusers {class_name} folder (config.json + "
                              f"weights).")
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise ConversionError(f"{config_path} does not exist; point at a diffusers {class_name} folder.")
    with open(config_path) as f:
        config = json.load(f)
    found = config.get("_class_name")
    if found != class_name:
        raise ConversionError(f"{config_path} describes a {found}, not a {class_name}.")
    weights = next((os.path.join(folder, n) for n in WEIGHT_FILES if os.path.isfile(os.path.join(folder, n))), None)
    if weights is None:
        raise ConversionError(f"{folder} has no weights file (expected one of {', '.join(WEIGHT_FILES)}).")
    return config, read_safetensors(weights)
