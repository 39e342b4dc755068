"""DDPM in the latent space of configs/autoencoder/kl_fashion_mnist.py (LDM-4 on Fashion-MNIST).

Train the autoencoder first, in the folder config.latent.autoencoder_dir names:

    python main.py --config configs/autoencoder/kl_fashion_mnist.py --mode train --workdir runs/kl_fashion_mnist
    python main.py --config configs/latent/ddpm_fashion_mnist.py --mode train --workdir runs/ldm_fashion_mnist

config.data stays the pixels' (28x28x1 Fashion-MNIST: what the autoencoder was trained on, what samples are
decoded to and FD is measured on); the U-Net sees the 7x7x4 latents z = s E(2x - 1). 7 is odd, so the U-Net
has one resolution (ch_mult (1,)) with attention there.
"""
from configs import recipes
from configs.default_fashion_mnist import get_default_configs


def get_config():
    config = recipes.ddpm(get_default_configs())
    config.latent.autoencoder_dir = "runs/kl_fashion_mnist"
    t = config.training
    t.n_iters = 5000
    t.batch_size = 64
    t.snapshot_freq = 5000
    t.snapshot_freq_for_preemption = 500
    m = config.model
    m.nf = 64
    m.ch_mult = (1,)
    m.num_res_blocks = 2
    m.attn_resolutions = (7,)
    m.dropout = 0.1
    m.ema_rate = 0.999
    config.optim.lr = 1e-3
    config.optim.warmup = 500
    return config
