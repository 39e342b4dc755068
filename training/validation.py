"""Checks that turn a bad config into one clear sentence before any work starts."""
from __future__ import annotations

import numbers


from configs import ConfigError


def _kind(default) -> tuple[str, tuple[type, ...]] | None:
    """(description, accepted types) of a base-config default; None when the default says nothing (None)."""
    if isinstance(default, bool):
        return "a bool (True/False)", (bool,)
    if isinstance(default, int):
        return "an integer", (numbers.Integral,)
    if isinstance(default, float):
        return "a number", (numbers.Real,)
    if isinstance(default, str):
        return "a string", (str,)
    if isinstance(default, (tuple, list)):
        return "a tuple", (tuple, list)
    return None


def check_field_types(config) -> None:
    """Every field of configs/defaults.py's base config is present in `config` with a value of its kind."""
    from configs.defaults import get_base_config

    def walk(reference, actual, prefix):
        for name, default in reference.items():
            path = f"{prefix}.{name}"
            if name not in actual:
                raise ConfigError(f"{path} is missing; build configs on configs/defaults.py's get_base_config(), "
                                  f"which lists every field.")
            value = actual[name]
            if hasattr(default, "items"):
                if not hasattr(value, "items"):
                    raise ConfigError(f"{path} must be a group of fields (a ConfigDict), got {value!r}.")
                walk(default, value, path)
                continue
            kind = _kind(default)
            bad_bool = isinstance(value, bool) and not isinstance(default, bool)  # bool is an int in Python
            if kind is not None and (bad_bool or not isinstance(value, kind[1])):
                raise ConfigError(f"{path}={value!r} must be {kind[0]}, like its default {default!r}.")

    walk(get_base_config(), config, "config")


#: (field, test, what it must be) for the numeric fields with a range.
_RANGES = (
    ("training.snapshot_num_samples", lambda v: v >= 1, ">= 1"),
    ("data.image_size", lambda v: v >= 1, ">= 1"),
    ("data.num_channels", lambda v: v >= 1, ">= 1"),
    ("model.num_scales", lambda v: v >= 1, ">= 1"),
    ("model.ema_rate", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    ("model.dropout", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("optim.lr", lambda v: v > 0, "> 0"),
)


def validate_train_config(config) -> None:
    """The score model's config: field types, ranges, and what the network's shape needs (the schedule's
    fields are training.loop.Schedule.check's; options of the SDE, loss and sampler are checked where they
    are used, when those objects are built)."""
    check_field_types(config)
    for path, ok, requirement in _RANGES:
        group, name = path.split(".")
        if not ok(config[group][name]):
            raise ConfigError(f"config.{path}={config[group][name]!r} must be {requirement}.")
    d, m = config.data, config.model
    if m.patch_size != 1 and (m.name != "ddpm" or m.patch_size < 1):
        raise ConfigError(f"config.model.patch_size={m.patch_size} must be 1, or >= 1 with the 'ddpm' network "
                          f"(config.model.name={m.name!r}).")
    factor = m.patch_size * 2 ** (len(m.ch_mult) - 1)
    if d.image_size % factor:
        raise ConfigError(f"config.data.image_size={d.image_size} must be divisible by {factor}, the "
                          f"downsampling of config.model.patch_size={m.patch_size} and of the {len(m.ch_mult)} "
                          f"resolutions in config.model.ch_mult.")
