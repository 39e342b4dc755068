"""A ControlNet on Canny edges of the 8x8 digits, on a DDPM U-Net base: a run of configs/vp/ddpm_digits.py
(config.model / data / optim are the base's; config.controlnet.base_workdir names its run).

    python main.py --config configs/vp/ddpm_digits.py --mode train --workdir runs/ddpm_digits
    python main.py --config configs/controlnet/canny_ddpm_digits.py --mode train --workdir runs/canny_ddpm_digits \
        --config.controlnet.base_workdir=runs/ddpm_digits
    python main.py --config configs/controlnet/canny_ddpm_digits.py --mode sample --workdir runs/canny_ddpm_digits \
        --config.controlnet.base_workdir=runs/ddpm_digits --config.sampling.input_indices=0,1,2,3
"""
from configs.controlnet import canny_digits
from configs.vp import ddpm_digits


def get_config():
    return canny_digits.canny_controlnet(ddpm_digits.get_config())
