"""DDPM on Fashion-MNIST pixels (28x28x1): the pixel-space twin of configs/latent/ddpm_fashion_mnist.py.

ddpm_mnist's U-Net shape (three resolutions 28 -> 14 -> 7, ch_mult (1, 2, 2), one residual block a level,
attention at 7) at nf = 32, so that it has about as many parameters as the latent model (1.10M against 0.92M)
and 32 GroupNorm groups divide every width; batch, optimiser, dropout and EMA are the latent model's, so that
benchmarks/pixel_vs_latent.py compares the spaces and not the training recipes.
"""
from configs import recipes
from configs.default_fashion_mnist import get_default_configs


def get_config():
    config = recipes.ddpm(get_default_configs())
    t = config.training
    t.n_iters = 5000
    t.batch_size = 64
    t.snapshot_freq = 5000
    t.snapshot_freq_for_preemption = 500
    m = config.model
    m.nf = 32
    m.ch_mult = (1, 2, 2)
    m.num_res_blocks = 1
    m.attn_resolutions = (7,)
    m.dropout = 0.1
    m.ema_rate = 0.999
    config.optim.lr = 1e-3
    config.optim.warmup = 500
    return config
