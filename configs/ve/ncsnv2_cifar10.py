"""NCSNv2 on CIFAR-10: SMLD with 232 noise scales, annealed Langevin dynamics
(score_sde configs/ve/ncsnv2/cifar10.py)."""
from configs.default_cifar10 import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "vesde"
    config.training.continuous = False
    config.sampling.method = "pc"
    config.sampling.predictor = "none"
    config.sampling.corrector = "ald"
    config.sampling.n_steps_each = 5
    config.sampling.snr = 0.176

    model = config.model
    model.name = "ncsnv2_64"
    model.scale_by_sigma = True
    model.num_scales = 232
    model.ema_rate = 0.999
    model.normalization = "InstanceNorm++"
    model.nonlinearity = "elu"
    model.nf = 128
    model.interpolation = "bilinear"

    optim = config.optim
    optim.weight_decay = 0.0
    optim.optimizer = "Adam"
    optim.lr = 1e-4
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.warmup = 0
    optim.grad_clip = -1.0
    return config
