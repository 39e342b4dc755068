"""CelebA-HQ at 256x256, with score_sde's values for its 256px datasets (default_lsun_configs)."""
from configs.defaults import get_base_config


def get_default_configs():
    config = get_base_config()
    config.data.dataset = "CelebAHQ"
    config.data.image_size = 256
    config.data.num_channels = 3
    config.data.random_flip = True
    config.training.batch_size = 64
    config.training.n_iters = 2400001
    config.training.snapshot_freq = 50000
    config.training.snapshot_freq_for_preemption = 5000
    config.sampling.snr = 0.075
    config.eval.batch_size = 512
    config.eval.begin_ckpt = 50
    config.eval.end_ckpt = 96
    config.eval.enable_sampling = True
    config.eval.num_samples = 50000
    config.model.sigma_max = 378.0
    config.model.sigma_min = 0.01
    config.model.num_scales = 2000
    config.model.dropout = 0.0
    config.model.embedding_type = "fourier"
    return config
