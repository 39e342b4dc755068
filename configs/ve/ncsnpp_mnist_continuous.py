"""A small NCSN++ on embedded MNIST with the VE SDE, trained in continuous time.

sigma_max = 16 is about the largest pairwise distance between the training images
in [0, 1] (15.8): Song & Ermon (2020), technique 1.
"""
from configs import recipes
from configs.default_mnist import get_default_configs


def get_config():
    config = recipes.ncsnpp(get_default_configs())
    config.training.sde = "vesde"
    config.training.continuous = True
    config.training.n_iters = 3000
    config.sampling.predictor = "reverse_diffusion"
    config.sampling.corrector = "langevin"
    m = config.model
    m.sigma_max = 16.0
    m.scale_by_sigma = True
    m.nf = 16
    m.ch_mult = (1, 2, 2)
    m.num_res_blocks = 1
    m.attn_resolutions = (7,)
    m.dropout = 0.0
    m.ema_rate = 0.999
    config.optim.lr = 1e-3
    return config
