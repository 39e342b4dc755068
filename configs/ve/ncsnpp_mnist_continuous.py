"""A small NCSN++ on embedded MNIST with the VE SDE, trained in continuous time.

sigma_max = 16 is about the largest pairwise distance between the training images
in [0, 1] (15.8): Song & Ermon (2020), technique 1.
"""
from configs.default_mnist import get_default_configs
from configs.ve.ncsnpp_cifar10_continuous import get_config as get_cifar10_config


def get_config():
    config = get_default_configs()
    config.model = get_cifar10_config().model
    config.training.sde = "vesde"
    config.training.continuous = True
    config.training.n_iters = 3000
    config.sampling.predictor = "reverse_diffusion"
    config.sampling.corrector = "langevin"
    model = config.model
    model.sigma_max = 16.0
    model.nf = 16
    model.ch_mult = (1, 2, 2)
    model.num_res_blocks = 1
    model.attn_resolutions = (7,)
    model.dropout = 0.0
    model.ema_rate = 0.999
    config.optim.lr = 1e-3
    return config
