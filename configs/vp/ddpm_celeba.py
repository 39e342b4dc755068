"""DDPM on CelebA 64x64: the DDPM CIFAR-10 U-Net at 64px (attention at 16x16).

CelebA itself is read through TFDS (config.data.dataset = "CELEBA"); see README, "Datasets".
"""
from configs import recipes
from configs.default_celeba import get_default_configs


def get_config():
    return recipes.ddpm(get_default_configs())
