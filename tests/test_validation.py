"""The score model's config checks (validate_train_config and the loop's Schedule.check): each bad field is
one sentence naming it, before any work starts."""
import pytest

from configs.vp import ddpm_digits
from training.loop import Schedule
from training.validation import ConfigError, validate_train_config


def validate(config, num_devices=1):
    validate_train_config(config)
    Schedule.from_config(config).check(num_devices)


def broken(edit):
    config = ddpm_digits.get_config()
    edit(config)
    return config


def set_field(path, value):
    group, name = path.split(".")

    def edit(config):
        config[group][name] = None  # a field set to None takes any type afterwards (as in a hand-written config)
        config[group][name] = value
    return edit


def delete_field(path):
    group, name = path.split(".")
    return lambda config: config[group].__delitem__(name)


@pytest.mark.parametrize("edit,message", [
    (set_field("training.n_iters", "5000"), "config.training.n_iters='5000' must be an integer, like its default"),
    (set_field("training.batch_size", 64.0), "config.training.batch_size=64.0 must be an integer"),
    (set_field("training.log_freq", True), "config.training.log_freq=True must be an integer"),
    (set_field("training.continuous", "yes"), "config.training.continuous='yes' must be a bool (True/False)"),
    (set_field("optim.lr", "2e-4"), "config.optim.lr='2e-4' must be a number"),
    (set_field("model.ch_mult", 2), "config.model.ch_mult=2 must be a tuple"),
    (set_field("data.dataset", None), "config.data.dataset=None must be a string"),
    (delete_field("training.snapshot_freq"), "config.training.snapshot_freq is missing; build configs on "
                                             "configs/defaults.py's get_base_config()"),
    (lambda c: setattr(c.model, "ema_rate", 1.5), "config.model.ema_rate=1.5 must be in [0, 1]"),
    (lambda c: setattr(c.optim, "lr", 0.0), "config.optim.lr=0.0 must be > 0"),
    (lambda c: setattr(c.training, "keep_checkpoints", -1), "config.training.keep_checkpoints=-1 must be >= 0"),
    (lambda c: setattr(c.training, "keep_checkpoint_every", 1500),
     "config.training.keep_checkpoint_every=1500 must be a multiple of config.training.snapshot_freq=1000"),
    (lambda c: setattr(c.training, "n_jitted_steps", 3),
     "config.training.log_freq=25 must be a positive multiple of config.training.n_jitted_steps=3"),
    (lambda c: setattr(c.data, "image_size", 7), "config.data.image_size=7 must be divisible by 2"),
    (lambda c: setattr(c.model, "patch_size", 3), "config.data.image_size=8 must be divisible by 6, the "
                                                  "downsampling of config.model.patch_size=3"),
    (lambda c: c.model.update(name="ncsnpp", patch_size=2), "config.model.patch_size=2 must be 1, or >= 1 with the "
                                                            "'ddpm' network"),
])
def test_bad_fields_are_named(edit, message):
    with pytest.raises(ConfigError) as error:
        validate(broken(edit))
    assert message in str(error.value)


def test_batch_size_must_split_over_the_devices():
    with pytest.raises(ConfigError, match=r"training.batch_size=64 must be a positive multiple of the 3 devices"):
        validate(ddpm_digits.get_config(), num_devices=3)


def test_the_shipped_configs_pass():
    import importlib

    for name in ("vp.ddpm_digits", "vp.ddpm_mnist", "vp.ddpm_fashion_mnist", "vp.ddpm_cifar10"):
        validate(importlib.import_module(f"configs.{name}").get_config())
