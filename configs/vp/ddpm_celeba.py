"""DDPM on CelebA 64x64: the DDPM CIFAR-10 architecture at 64px (attention at 16x16).

CelebA itself is read through TFDS (config.data.dataset = "CELEBA"); see README, "Datasets".
"""
from configs.default_celeba import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "vpsde"
    config.training.continuous = False
    config.training.reduce_mean = True
    config.sampling.method = "pc"
    config.sampling.predictor = "ancestral_sampling"
    config.sampling.corrector = "none"
    config.data.centered = True
    config.model.name = "ddpm"
    config.model.scale_by_sigma = False
    config.model.ema_rate = 0.9999
    config.model.nf = 128
    config.model.ch_mult = (1, 2, 2, 2)
    config.model.num_res_blocks = 2
    config.model.attn_resolutions = (16,)
    config.model.resamp_with_conv = True
    config.model.conditional = True
    return config
