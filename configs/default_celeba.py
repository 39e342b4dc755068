"""CelebA at 64x64 (centre crop 140, then resize), as score_sde's default_celeba_configs."""
from configs.defaults import get_base_config


def get_default_configs():
    config = get_base_config()
    config.data.dataset = "CELEBA"
    config.data.image_size = 64
    config.data.num_channels = 3
    config.data.random_flip = True
    config.training.batch_size = 128
    config.training.n_jitted_steps = 5
    config.training.snapshot_freq = 50000
    config.eval.batch_size = 1024
    config.eval.begin_ckpt = 1
    config.eval.end_ckpt = 26
    config.eval.num_samples = 50000
    config.model.sigma_max = 90.0
    return config
