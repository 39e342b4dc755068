"""A text-conditioned score model on 'mnist_pairs' ("a 3 left of a 7"): Stable Diffusion's U-Net
('unet2d_condition') cross-attending to a prompt's text tower, at 28 px.

    python main.py --config configs/text/unet_mnist_pairs.py --mode train --workdir runs/text_pairs
    python main.py --config configs/text/unet_mnist_pairs.py --mode sample --workdir runs/text_pairs \\
        --config.sampling.prompt="a 3 left of a 7|a 7 left of a 3" --config.sampling.guidance=cfg \\
        --config.sampling.guidance_weight=3

The text tower (config.text: CLIP's transformer, or 'bag_of_words' as the order-blind control) is trained
with the U-Net by default; --config.text.pretrained_dir=<a CLIP run> uses that run's exported tower, frozen.
10% of the captions are replaced by the empty prompt (training.label_dropout), which teaches the
unconditional branch of classifier-free guidance.

Pixel space, not latent: the images are 28x28x1 already (784 numbers, fewer than SD's 64x64x4 latents),
and no autoencoder is trained for these digits; an 8x-downsampling autoencoder would leave each digit about
2 latent pixels wide, too few to keep its identity. Latent diffusion pays off for large images, not here.
"""
from configs import recipes
from configs.default_mnist import get_default_configs


def get_config():
    config = recipes.ddpm(get_default_configs())
    config.data.dataset = "mnist_pairs"
    config.data.random_flip = False  # flips would swap left and right but not the caption
    t = config.training
    t.n_iters = 3000
    t.batch_size = 32
    t.label_dropout = 0.1
    t.snapshot_freq = 3000
    t.snapshot_freq_for_preemption = 500
    t.snapshot_num_samples = 16
    m = config.model
    m.name = "unet2d_condition"
    m.nf = 32
    m.ch_mult = (1, 2, 2)
    m.num_res_blocks = 1
    m.attn_resolutions = (14, 7)  # cross-attention at 14 and 7 px
    m.num_heads = 4
    m.norm_num_groups = 8
    m.cross_attention_dim = 64  # = text.width
    m.dropout = 0.0
    m.ema_rate = 0.999
    config.text.conditional = True
    config.sampling.method = "ddim"  # 100 deterministic steps (sampling.num_steps) instead of 1,000
    config.sampling.num_steps = 100
    config.optim.lr = 1e-3
    return config
