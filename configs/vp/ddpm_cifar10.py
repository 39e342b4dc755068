"""DDPM on CIFAR-10 (Ho et al. 2020; score_sde configs/vp/ddpm/cifar10.py)."""
from configs import recipes
from configs.default_cifar10 import get_default_configs


def get_config():
    return recipes.ddpm(get_default_configs())
