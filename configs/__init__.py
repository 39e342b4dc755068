"""Experiment configs (one file per experiment, built on defaults.py) and ConfigError, the error every layer
raises for a config value a run cannot use (main.py prints it as one line)."""


class ConfigError(ValueError):
    """A config field has a value this run cannot use."""
