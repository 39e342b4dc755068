"""A tiny DDPM on scikit-learn's 8x8 digits, for tests and smoke runs (seconds per hundred steps on a CPU)."""
from configs.default_digits import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "vpsde"
    config.training.continuous = False
    config.training.reduce_mean = True
    config.sampling.predictor = "ancestral_sampling"
    config.sampling.corrector = "none"
    config.data.centered = True
    config.model.name = "ddpm"
    config.model.nf = 16
    config.model.ch_mult = (1, 2)
    config.model.num_res_blocks = 1
    config.model.attn_resolutions = (4,)
    config.model.dropout = 0.0
    config.model.ema_rate = 0.99
    config.model.num_scales = 100
    return config
