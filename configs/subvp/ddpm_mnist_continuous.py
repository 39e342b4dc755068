"""The quickstart's recipe (configs/vp/ddpm_mnist.py: EDM preconditioning and loss, continuous time, DPM-Solver)
on embedded MNIST under the sub-VP SDE."""
from configs.vp.ddpm_mnist import get_config as get_vp_config


def get_config():
    config = get_vp_config()
    config.training.sde = "subvpsde"
    return config
