"""A CLIP-style pair on 'mnist_pairs' (two real digits side by side, "a 3 left of a 7"), at 28 px:

    python main.py --config configs/clip/mnist_pairs.py --mode train --workdir runs/clip_pairs
    [--config.text.tower=bag_of_words  for the order-blind control]

Its text tower (text.width 64, 2 layers) can then condition configs/text/unet_mnist_pairs.py, frozen
(--config.text.pretrained_dir=runs/clip_pairs). Adam(W) at 1e-3 with weight decay 1e-4, no warmup or
clipping, batch 128.
"""
from configs.default_mnist import get_default_configs


def get_config():
    config = get_default_configs()
    config.data.dataset = "mnist_pairs"
    config.data.centered = True
    t = config.training
    t.task = "clip"
    t.batch_size = 128
    t.n_iters = 600
    t.log_freq = 50
    t.eval_freq = 100
    t.snapshot_freq = 200
    t.snapshot_freq_for_preemption = 100
    config.eval.batch_size = 100
    config.optim.lr = 1e-3
    config.optim.weight_decay = 1e-4
    config.optim.warmup = 0
    config.optim.grad_clip = -1.0
    return config
