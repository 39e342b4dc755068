"""NCSN++ (cont.) on CIFAR-10 with the VE SDE (score_sde configs/ve/cifar10_ncsnpp_continuous.py)."""
from configs import recipes
from configs.default_cifar10 import get_default_configs


def get_config():
    config = recipes.ncsnpp(get_default_configs())
    config.training.sde = "vesde"
    config.training.continuous = True
    config.sampling.predictor = "reverse_diffusion"
    config.sampling.corrector = "langevin"
    config.model.scale_by_sigma = True
    config.model.ema_rate = 0.999
    return config
