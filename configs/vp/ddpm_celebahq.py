"""DDPM on 256x256 CelebA-HQ (Ho et al. 2020; score_sde configs/vp/ddpm/celebahq.py)."""
from configs.default_celebahq import get_default_configs


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
    config.model.num_scales = 1000
    config.model.ema_rate = 0.9999
    config.model.normalization = "GroupNorm"
    config.model.nonlinearity = "swish"
    config.model.nf = 128
    config.model.ch_mult = (1, 1, 2, 2, 4, 4)
    config.model.num_res_blocks = 2
    config.model.attn_resolutions = (16,)
    config.model.resamp_with_conv = True
    config.model.conditional = True
    config.optim.lr = 2e-5
    return config
