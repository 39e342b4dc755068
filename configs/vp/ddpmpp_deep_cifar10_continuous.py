"""DDPM++ cont. (deep) on CIFAR-10 with the VP SDE: DDPM++ with 8 residual blocks per resolution
(score_sde configs/vp/cifar10_ddpmpp_deep_continuous.py)."""
from configs.vp import ddpmpp_cifar10_continuous


def get_config():
    config = ddpmpp_cifar10_continuous.get_config()
    config.training.n_iters = 950001
    config.model.num_res_blocks = 8
    return config
