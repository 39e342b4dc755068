"""DDPM on 256x256 CelebA-HQ (Ho et al. 2020; score_sde configs/vp/ddpm/celebahq.py)."""
from configs import recipes
from configs.default_celebahq import get_default_configs


def get_config():
    config = recipes.ddpm(get_default_configs())
    config.model.num_scales = 1000
    config.model.ch_mult = (1, 1, 2, 2, 4, 4)
    config.optim.lr = 2e-5
    return config
