"""Class-conditional DDPM on the embedded MNIST digits: configs/vp/ddpm_mnist.py plus a class embedding.

One network learns s(x, t | y) and, through label dropout (10% null labels), the unconditional s(x, t),
so `--mode sample` can draw any class with or without classifier-free guidance.
"""
from configs.vp import ddpm_mnist


def get_config():
    config = ddpm_mnist.get_config()
    config.model.num_classes = 10
    config.training.label_dropout = 0.1
    return config
