"""score_sde_pytorch checkpoints -> this framework's variables, by one mechanical mapping.

A checkpoint of yang-song/score_sde_pytorch (its `utils.save_checkpoint`) is

    {'model': state dict of the torch.nn.DataParallel network ('module.' names),
     'ema': {'decay', 'num_updates', 'shadow_params'}, 'optimizer': ..., 'step': int},

with `shadow_params` the EMA weights, a list aligned with the network's parameters that require grad,
in registration order. The DDPM and NCSN++ networks there keep their top-level modules in one flat
list, `all_modules.<k>`, in the order they are used; ours (models/ddpm.py, models/ncsnpp.py) create
theirs in that same order, so the mapping is the k-th module holding variables on each side, recorded
by `module_order` from a trace of our network rather than written down. Inside a module the names are
the reference's (GroupNorm_0, Conv_1, NIN_2, ...) by the rule of models/convert.py, with three
renames: a NIN's `W` (in, out) and `b` are our NIN's Dense_0 kernel and bias, the FIR resampling
`Conv2d_0` is our `_ResampleConv_0`, and the frozen Fourier frequencies `W` (no grad, so not in the
EMA) live in our 'constants' collection. The `sigmas` buffer is checked against the config.

`config_from_reference` builds our config from the reference config's fields (the fixtures'
`<case>.json`), setting score_sde's conventions: 32 GroupNorm groups in DDPM, min(C/4, 32) in NCSN++,
and its discrete-time labels (configs/defaults.py: model.norm_groups, model.discrete_labels).
"""
from __future__ import annotations

import dataclasses
import pickle

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from configs import defaults, recipes
from models import pth
from models import convert
from models.registry import get_model
from models.score_fn import init_model

_RECIPES = {"ddpm": recipes.ddpm, "ncsnpp": recipes.ncsnpp}
#: score_sde's GroupNorm rule per network (its ddpm.py uses 32 groups, its layerspp.py min(C // 4, 32)).
_NORM_GROUPS = {"ddpm": "fixed_32", "ncsnpp": "quarter_channels"}


@dataclasses.dataclass(frozen=True)
class Imported:
    """A converted checkpoint: model.apply-ready variables with the 'model' and the EMA weights."""

    variables: dict
    ema_variables: dict
    step: int
    ema_decay: float


def module_order(config) -> list[str]:
    """Names of the config's network's top-level submodules that hold variables, in the order it creates them."""
    model, called = get_model(config), []

    def record(next_fun, args, kwargs, context):
        path = context.module.path
        if context.method_name == "__call__" and len(path) == 1 and path[0] not in called:
            called.append(path[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        shapes = jax.eval_shape(lambda rng: init_model(rng, config, model), jax.random.PRNGKey(0))
    owners = {name for collection in shapes.values() for name in collection}
    return [name for name in called if name in owners]


def _flat_key(module: str, rest: list[str], constants: set) -> tuple[str, bool]:
    """Our dotted key ('<collection>.<module>.<rest>', convert's naming) for one reference tensor, and whether
    its array is transposed first (a NIN keeps W as (in, out); convert expects a Linear's (out, in))."""
    transpose = rest[-1] == "W" and len(rest) >= 2 and rest[-2].startswith("NIN_")
    if rest[-1] in ("W", "b") and len(rest) >= 2 and rest[-2].startswith("NIN_"):
        rest = rest[:-1] + ["Dense_0", "weight" if rest[-1] == "W" else "bias"]
    rest = ["_ResampleConv_0" if part == "Conv2d_0" else part for part in rest]
    collection = "constants" if module in constants else "params"
    return ".".join([collection, module] + rest), transpose


def _reference_sigmas(config) -> np.ndarray:
    """score_sde's `get_sigmas(config)`: exp(linspace(log sigma_max, log sigma_min, num_scales))."""
    m = config.model
    return np.exp(np.linspace(np.log(m.sigma_max), np.log(m.sigma_min), m.num_scales))


def convert_checkpoint(checkpoint: dict, config, source: str = "the checkpoint") -> Imported:
    """Our variables for the network `config` describes, from a score_sde_pytorch checkpoint dict.

    Raises convert.ConversionError naming the parameters that do not fit (missing, unexpected, of the
    wrong shape, in the reference's names) when the checkpoint is of another architecture.
    """
    if not isinstance(checkpoint, dict) or not {"model", "ema"} <= set(checkpoint):
        raise convert.ConversionError(f"{source} is not a score_sde_pytorch checkpoint (no 'model' and 'ema').")
    state = {k[len("module."):] if k.startswith("module.") else k: np.asarray(v)
             for k, v in checkpoint["model"].items()}
    target = jax.eval_shape(lambda rng: init_model(rng, config), jax.random.PRNGKey(0))
    constants = set(target.get("constants", {}))
    order = module_order(config)
    indices = sorted({int(k.split(".")[1]) for k in state if k.startswith("all_modules.")})
    modules = dict(zip(indices, order))

    if "sigmas" in state:
        expected = _reference_sigmas(config)
        sigmas = state.pop("sigmas")
        if sigmas.shape != expected.shape or not np.allclose(sigmas, expected, rtol=1e-5):
            raise convert.ConversionError(
                f"{source} was trained with other noise levels: its buffer 'sigmas' ({sigmas.shape[0]} from "
                f"{sigmas.max():.4g} to {sigmas.min():.4g}) differs from config.model's sigma_max, sigma_min, "
                f"num_scales ({expected.shape[0]} from {expected[0]:.4g} to {expected[-1]:.4g}).")
    tensors, names, transposed, trainable = {}, {}, set(), []
    for key, array in state.items():
        parts = key.split(".")
        ours, transpose = key, False  # a key outside all_modules is reported as unexpected
        if parts[0] == "all_modules" and len(parts) > 2 and int(parts[1]) in modules:
            ours, transpose = _flat_key(modules[int(parts[1])], parts[2:], constants)
        tensors[ours], names[ours] = (array.T if transpose else array), key
        if transpose:
            transposed.add(ours)
        if ours.startswith("params."):
            trainable.append(ours)

    variables = _to_flax(tensors, target, names, source)
    shadow = [np.asarray(p) for p in checkpoint["ema"]["shadow_params"]]
    if len(shadow) != len(trainable):
        raise convert.ConversionError(
            f"{source}'s EMA holds {len(shadow)} shadow parameters but its model {len(trainable)} trainable ones.")
    ema_tensors = dict(tensors)
    ema_tensors.update({ours: p.T if ours in transposed else p for ours, p in zip(trainable, shadow)})
    ema_variables = _to_flax(ema_tensors, target, names, f"{source} (EMA)")
    return Imported(variables, ema_variables, int(checkpoint.get("step", 0)),
                    float(checkpoint["ema"].get("decay", config.model.ema_rate)))


def _to_flax(tensors, target, names, source):
    try:
        return convert.torch_to_flax(tensors, target, source=source, names=names)
    except convert.ConversionError as err:
        raise convert.ConversionError(f"{err} (Is config.model the architecture the checkpoint was trained as?)")


def load_checkpoint(path: str, config) -> Imported:
    """`convert_checkpoint` of the .pth file at `path` (read without torch by models.pth, which refuses a pickle
    naming anything but tensors and plain containers before it runs any of it)."""
    try:
        checkpoint = pth.load(path)
    except (OSError, ValueError, pickle.UnpicklingError) as err:
        raise convert.ConversionError(str(err).split("\n")[0]) from None
    return convert_checkpoint(checkpoint, config, source=path)


def config_from_reference(reference: dict) -> ml_collections.ConfigDict:
    """Our config for a score_sde config given as a dict of its fields ({'model': {...}, 'training': ...}).

    Fields this framework has take the reference's values; score_sde's conventions are set
    (model.norm_groups by network, model.discrete_labels = 'score_sde'); other fields are ignored.
    """
    config = defaults.get_base_config()
    name = reference["model"]["name"]
    if name not in _RECIPES:
        raise ValueError(f"No score_sde_pytorch import for model {name!r}; choose one of {sorted(_RECIPES)}.")
    config = _RECIPES[name](config)
    for section, fields in reference.items():
        if not isinstance(fields, dict) or section not in config:
            continue
        for field, value in fields.items():
            if field in config[section]:
                current = config[section][field]
                if isinstance(value, list):
                    value = tuple(value)
                elif isinstance(current, float) and isinstance(value, int):
                    value = float(value)
                config[section][field] = value
    config.model.norm_groups = _NORM_GROUPS[name]
    config.model.discrete_labels = "score_sde"
    return config
