"""CIFAR-10 at 32x32 (score_sde's default_cifar10_configs)."""
from configs.defaults import get_base_config


def get_default_configs():
    config = get_base_config()
    config.data.dataset = "CIFAR10"
    config.data.image_size = 32
    config.data.num_channels = 3
    config.data.random_flip = True
    config.training.n_jitted_steps = 5
    config.training.snapshot_freq = 50000
    config.eval.batch_size = 1024
    config.eval.begin_ckpt = 9
    config.eval.end_ckpt = 26
    config.eval.num_samples = 50000
    config.model.embedding_type = "fourier"
    return config
