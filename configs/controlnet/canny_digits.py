"""A ControlNet on Canny edges of the 8x8 digits, on the base of configs/controlnet/unet_digits_base.py
(config.model / data / optim are the base's; config.controlnet.base_workdir names its run).

    python main.py --config configs/controlnet/canny_digits.py --mode train --workdir runs/canny_digits \
        --config.controlnet.base_workdir=runs/unet_digits
    python main.py --config configs/controlnet/canny_digits.py --mode sample --workdir runs/canny_digits \
        --config.controlnet.base_workdir=runs/unet_digits --config.sampling.input_indices=0,1,2,3
"""
from configs.controlnet import unet_digits_base


def get_config():
    return canny_controlnet(unet_digits_base.get_config())


def canny_controlnet(config):
    """`config` (a base run's) turned into a Canny-edge ControlNet on that base, with this file's schedule."""
    config.training.task = "controlnet"
    config.training.n_iters = 2001
    config.training.snapshot_freq = 500
    config.controlnet.condition = "canny"
    config.controlnet.embedding_channels = (16,)  # no downsampling: the condition has the image's size
    return config
