"""A ControlNet on Canny edges of the MNIST digits, on the quickstart's base: a run of configs/vp/ddpm_mnist.py
(EDM preconditioning, 2x2 patches; the hint is folded into patches as the image is). config.model / data / optim
are the base's; config.controlnet.base_workdir names its run. Snapshots every 100 steps log the edge F1 curve
(workdir/edge_f1.json), so the jump ControlNet's authors call sudden convergence shows, or does not.

    python main.py --config configs/vp/ddpm_mnist.py --mode train --workdir runs/mnist
    python main.py --config configs/controlnet/canny_mnist.py --mode train --workdir runs/canny_mnist \
        --config.controlnet.base_workdir=runs/mnist
    python -m benchmarks.controlnet_edges --config controlnet/canny_mnist --base runs/mnist \
        --controlnet runs/canny_mnist --num 500
"""
from configs.controlnet import canny_digits
from configs.vp import ddpm_mnist


def get_config():
    config = canny_digits.canny_controlnet(ddpm_mnist.get_config())
    t = config.training
    t.n_iters = 2000
    # EDM's noise levels, at which the README's figures were measured (the quickstart moved to 0.6)
    t.edm_p_mean = -1.2
    t.snapshot_freq = 100
    t.snapshot_num_samples = 64
    config.optim.lr = 1e-3
    return config
