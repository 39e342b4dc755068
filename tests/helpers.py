"""Shared by tests (and tests/train_worker.py): the tiny training config."""
from configs.vp import ddpm_digits


def tiny_config():
    """ddpm_digits shrunk to nf=8 and batch 16, logging every 2 steps and checkpointing every 2 (pre-emption)
    and 4 (periodic) steps, no snapshot sampling."""
    config = ddpm_digits.get_config()
    config.model.nf = 8
    config.training.batch_size = 16
    config.training.snapshot_sampling = False
    config.training.log_freq = 2
    config.training.eval_freq = 2
    config.training.snapshot_freq = 4
    config.training.snapshot_freq_for_preemption = 2
    config.eval.batch_size = 16
    config.optim.warmup = 0
    config.optim.lr = 2e-3
    return config
