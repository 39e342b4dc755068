"""4x super-resolution of the 5,000 MNIST digits by concat conditioning (latent diffusion's 'concat'): the DDPM
of configs/vp/ddpm_mnist.py with each digit's 7x7 area-mean copy, shown at 28x28, as one more input channel,
dropped to the null image for 10% of the examples so that 'cfg' guidance applies.

    python main.py --config configs/concat/sr4_mnist.py --mode train --workdir runs/sr4_mnist
    python main.py --config configs/concat/sr4_mnist.py --mode sample --workdir runs/sr4_mnist \
        --config.sampling.input_indices=0,1,2,3 [--config.sampling.guidance=cfg --config.sampling.guidance_weight=1]

--config.concat.kind=inpaint (mask + masked image) or foreground (a thresholded map) trains the other kinds.
"""
from configs.vp import ddpm_mnist


def get_config():
    config = ddpm_mnist.get_config()
    c = config.concat
    c.kind = "lowres"
    c.factor = 4
    c.upsample = "nearest"
    c.dropout = 0.1
    config.training.snapshot_num_samples = 16
    # EDM's noise levels, at which the README's figures were measured (the quickstart moved to 0.6)
    config.training.edm_p_mean = -1.2
    config.sampling.num_samples = 4
    return config
