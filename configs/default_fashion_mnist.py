"""Fashion-MNIST (60k train / 10k test, 28x28) from its official IDX files."""
from configs.defaults import get_base_config


def get_default_configs():
    config = get_base_config()
    config.data.dataset = "fashion_mnist"
    config.data.image_size = 28
    config.data.num_channels = 1
    config.training.batch_size = 128
    config.training.log_freq = 50
    config.training.eval_freq = 500
    config.training.snapshot_freq = 5000
    config.training.snapshot_freq_for_preemption = 1000
    config.eval.batch_size = 500
    config.optim.warmup = 1000
    return config
