"""NCSN++ (cont.) on 256x256 CelebA-HQ with the VE SDE: output_skip / input_skip pyramids
(score_sde configs/ve/celebahq_256_ncsnpp_continuous.py)."""
from configs import recipes
from configs.default_celebahq import get_default_configs


def get_config():
    config = recipes.ncsnpp(get_default_configs())
    config.training.sde = "vesde"
    config.training.continuous = True
    config.sampling.predictor = "reverse_diffusion"
    config.sampling.corrector = "langevin"
    m = config.model
    m.sigma_max = 348.0
    m.scale_by_sigma = True
    m.ema_rate = 0.999
    m.ch_mult = (1, 1, 2, 2, 2, 2, 2)
    m.num_res_blocks = 2
    m.progressive = "output_skip"
    m.progressive_input = "input_skip"
    return config
