"""Class-conditional DDPM on scikit-learn's 8x8 digits: configs/vp/ddpm_digits.py plus a class embedding and
10% null labels (classifier-free guidance). Small enough to train in minutes on a shared CPU."""
from configs.vp import ddpm_digits


def get_config():
    config = ddpm_digits.get_config()
    config.model.num_classes = 10
    config.training.label_dropout = 0.1
    config.training.n_iters = 4000
    config.training.snapshot_sampling = False
    return config
