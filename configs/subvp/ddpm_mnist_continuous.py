"""The quickstart DDPM U-Net on embedded MNIST under the sub-VP SDE, trained in continuous time."""
from configs.vp.ddpm_mnist import get_config as get_vp_config


def get_config():
    config = get_vp_config()
    config.training.sde = "subvpsde"
    config.training.continuous = True
    config.sampling.predictor = "euler_maruyama"
    config.sampling.corrector = "none"
    return config
