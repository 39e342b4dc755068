"""DDPM++ (cont.) on CIFAR-10 with the VP SDE (score_sde configs/vp/cifar10_ddpmpp_continuous.py)."""
from configs import recipes
from configs.default_cifar10 import get_default_configs


def get_config():
    config = recipes.ncsnpp(get_default_configs())
    config.training.sde = "vpsde"
    config.training.continuous = True
    config.training.reduce_mean = True
    config.sampling.predictor = "euler_maruyama"
    config.sampling.corrector = "none"
    config.data.centered = True
    m = config.model
    m.scale_by_sigma = False
    m.ema_rate = 0.9999
    m.fir = False
    m.progressive_input = "none"
    m.embedding_type = "positional"
    return config
