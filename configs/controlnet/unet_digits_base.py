"""The base of the ControlNet example: a small, unconditional Stable Diffusion U-Net ('unet2d_condition', no
context: every cross-attention sees the null token) as a DDPM on scikit-learn's 8x8 digits.

    python main.py --config configs/controlnet/unet_digits_base.py --mode train --workdir runs/unet_digits
"""
from configs import recipes
from configs.default_digits import get_default_configs


def get_config():
    config = recipes.ddpm(get_default_configs())
    config.training.n_iters = 4001
    config.training.snapshot_freq = 1000
    config.training.snapshot_num_samples = 64
    m = config.model
    m.name = "unet2d_condition"
    m.nf = 32
    m.ch_mult = (1, 2)
    m.num_res_blocks = 1
    m.attn_resolutions = ()  # the mid block's attention only
    m.num_heads = 2
    m.cross_attention_dim = 8  # the null context's width: unused, kept small
    m.norm_num_groups = 8
    m.dropout = 0.0
    m.ema_rate = 0.99  # as configs/vp/ddpm_digits.py: at 0.999 a few thousand steps leave the EMA near the init
    m.num_scales = 100
    return config
