"""NCSN++ (cont.) on CIFAR-10 with the VP SDE: DDPM++ plus FIR resampling and a residual input
pyramid (score_sde configs/vp/cifar10_ncsnpp_continuous.py)."""
from configs.vp import ddpmpp_cifar10_continuous


def get_config():
    config = ddpmpp_cifar10_continuous.get_config()
    config.model.fir = True
    config.model.progressive_input = "residual"
    return config
