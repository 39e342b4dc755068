"""LDM's VQ autoencoder (VQ-f4: 7x7x3 latents, a 256-code codebook) on Fashion-MNIST, the counterpart of
kl_fashion_mnist.py (see there for the sizes). A latent score model trains on the latents before quantisation;
decoding quantises them, as LDM does."""
from configs.autoencoder import kl_fashion_mnist


def get_config():
    config = kl_fashion_mnist.get_config()
    a = config.autoencoder
    a.kind = "vq"
    a.latent_channels = 3
    a.num_vq_embeddings = 256
    a.vq_weight = 1.0
    a.vq_init = "data"  # taming's U(-1/K, 1/K) start collapsed to 4% of the codes in 600 steps
    return config
