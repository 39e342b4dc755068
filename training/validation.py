"""Checks that turn a bad config into one clear sentence before any work starts."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config field has a value this run cannot use."""


def validate_train_config(config, num_devices: int = 1) -> None:
    t, d, m = config.training, config.data, config.model
    k = t.n_jitted_steps
    if k < 1:
        raise ConfigError(f"config.training.n_jitted_steps must be >= 1, got {k}.")
    for name in ("log_freq", "eval_freq", "snapshot_freq", "snapshot_freq_for_preemption"):
        value = t[name]
        if value < 1 or value % k:
            raise ConfigError(f"config.training.{name}={value} must be a positive multiple of "
                              f"config.training.n_jitted_steps={k}.")
    for name, value in (("training.batch_size", t.batch_size), ("eval.batch_size", config.eval.batch_size),
                        ("training.snapshot_num_samples", t.snapshot_num_samples)):
        if value < 1 or value % num_devices:
            raise ConfigError(f"config.{name}={value} must be a positive multiple of the {num_devices} devices.")
    if not t.continuous and t.sde.lower() == "subvpsde":
        raise ConfigError("The sub-VP SDE has no discrete chain: set config.training.continuous=True.")
    if t.likelihood_weighting and not t.continuous:
        raise ConfigError("config.training.likelihood_weighting needs config.training.continuous=True.")
    factor = 2 ** (len(m.ch_mult) - 1)
    if d.image_size % factor:
        raise ConfigError(f"config.data.image_size={d.image_size} must be divisible by {factor}, the "
                          f"downsampling of the {len(m.ch_mult)} resolutions in config.model.ch_mult.")
