"""NCSN++ cont. (deep) on CIFAR-10 with the VE SDE: NCSN++ with 8 residual blocks per resolution
(score_sde configs/ve/cifar10_ncsnpp_deep_continuous.py)."""
from configs.ve import ncsnpp_cifar10_continuous


def get_config():
    config = ncsnpp_cifar10_continuous.get_config()
    config.training.n_iters = 950001
    config.model.num_res_blocks = 8
    return config
