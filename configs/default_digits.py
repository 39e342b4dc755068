"""scikit-learn's 1,797 real 8x8 handwritten digits: tiny, for tests and smoke runs."""
from configs.defaults import get_base_config


def get_default_configs():
    config = get_base_config()
    config.data.dataset = "digits"
    config.data.image_size = 8
    config.data.num_channels = 1
    config.training.batch_size = 64
    config.training.n_iters = 2001
    config.training.log_freq = 25
    config.training.eval_freq = 100
    config.training.snapshot_freq = 1000
    config.training.snapshot_freq_for_preemption = 250
    config.eval.batch_size = 128
    config.optim.warmup = 100
    return config
