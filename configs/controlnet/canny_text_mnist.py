"""A ControlNet on Canny edges of the 'mnist_pairs' digits, on the text-conditioned base of
configs/text/unet_mnist_pairs.py (config.model / data / optim / text are the base's; config.controlnet.base_workdir
names its run). The base's text tower is used frozen, and each step's captions (10% dropped to the empty prompt,
training.label_dropout, as the base was trained) reach both the base and the ControlNet.

    python main.py --config configs/text/unet_mnist_pairs.py --mode train --workdir runs/text_pairs
    python main.py --config configs/controlnet/canny_text_mnist.py --mode train --workdir runs/canny_text \\
        --config.controlnet.base_workdir=runs/text_pairs
    python main.py --config configs/controlnet/canny_text_mnist.py --mode sample --workdir runs/canny_text \\
        --config.controlnet.base_workdir=runs/text_pairs --config.sampling.input_indices=0,1 \\
        --config.sampling.prompt="a 3 left of a 7|a 7 left of a 3" --config.sampling.guidance=cfg \\
        --config.sampling.guidance_weight=3
"""
from configs.controlnet import canny_digits
from configs.text import unet_mnist_pairs


def get_config():
    return canny_digits.canny_controlnet(unet_mnist_pairs.get_config())
