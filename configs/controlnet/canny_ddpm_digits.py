"""A ControlNet on Canny edges of the 8x8 digits, on a DDPM U-Net base: a run of configs/vp/ddpm_digits.py
(config.model / data / optim are the base's; config.controlnet.base_workdir names its run).

    python main.py --config configs/vp/ddpm_digits.py --mode train --workdir runs/ddpm_digits
    python main.py --config configs/controlnet/canny_ddpm_digits.py --mode train --workdir runs/canny_ddpm_digits \
        --config.controlnet.base_workdir=runs/ddpm_digits
    python main.py --config configs/controlnet/canny_ddpm_digits.py --mode sample --workdir runs/canny_ddpm_digits \
        --config.controlnet.base_workdir=runs/ddpm_digits --config.sampling.input_indices=0,1,2,3
"""
from configs.vp import ddpm_digits


def get_config():
    config = ddpm_digits.get_config()
    config.training.task = "controlnet"
    config.training.n_iters = 2001
    config.training.snapshot_freq = 500
    config.controlnet.condition = "canny"
    config.controlnet.embedding_channels = (16,)  # no downsampling: the condition has the image's size
    return config
