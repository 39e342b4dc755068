"""DDPM++ (cont.) on CIFAR-10 with the sub-VP SDE (score_sde configs/subvp/cifar10_ddpmpp_continuous.py)."""
from configs.vp import ddpmpp_cifar10_continuous


def get_config():
    config = ddpmpp_cifar10_continuous.get_config()
    config.training.sde = "subvpsde"
    return config
