"""A tiny DDPM on scikit-learn's 8x8 digits, for tests and smoke runs (seconds per hundred steps on a CPU)."""
from configs import recipes
from configs.default_digits import get_default_configs


def get_config():
    config = recipes.ddpm(get_default_configs())
    m = config.model
    m.nf = 16
    m.ch_mult = (1, 2)
    m.num_res_blocks = 1
    m.attn_resolutions = (4,)
    m.dropout = 0.0
    m.ema_rate = 0.99
    m.num_scales = 100
    # Trained here before score_sde's conventions were options (and nf = 16 is too few channels for 32 groups).
    m.norm_groups = "quarter_channels"
    m.discrete_labels = "floor_index"
    return config
