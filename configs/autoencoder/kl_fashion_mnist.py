"""LDM's KL autoencoder (f = 4, c = 4) on Fashion-MNIST: the first stage of configs/latent/ddpm_fashion_mnist.py.

28x28 images stay at their size (no resampling, so the domain classifier and FD of pixel-space models apply
unchanged): three levels of AutoencoderKL halve 28 -> 14 -> 7, giving 7x7x4 latents (196 numbers per image,
LDM-4's compression of 784 / 196 = 4). The PatchGAN has two stride-2 layers (28 -> 7 -> 5x5 patch logits); the
GAN terms start halfway. Sized for two CPU cores (a few minutes).
"""
from configs.default_fashion_mnist import get_default_configs


def get_config():
    config = get_default_configs()
    t = config.training
    t.task = "autoencoder"
    t.n_iters = 2000
    t.batch_size = 32
    t.log_freq = 50
    t.eval_freq = 250
    t.snapshot_freq = 1000
    t.snapshot_freq_for_preemption = 250
    t.snapshot_num_samples = 16
    config.eval.batch_size = 250
    a = config.autoencoder
    a.kind = "kl"
    a.latent_channels = 4
    a.block_out_channels = (16, 32, 32)
    a.norm_num_groups = 8
    a.disc_start = 1000
    a.disc_ndf = 16
    a.disc_layers = 2
    a.lr = 2e-4
    return config
