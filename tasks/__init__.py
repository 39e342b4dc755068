"""The trainable components, one file each, and the name -> task registry that --mode train reads.

A task is what training/loop.py trains (its docstring gives the contract). A new component is one file
here plus its line below and its config; config.training.task names it.
"""
from __future__ import annotations

from tasks.autoencoder import AutoencoderTask
from tasks.classifier import ClassifierTask
from tasks.clip import ClipTask
from tasks.controlnet import ControlNetTask
from tasks.score import ScoreTask

TASKS = {"score": ScoreTask, "classifier": ClassifierTask, "autoencoder": AutoencoderTask,
         "controlnet": ControlNetTask, "clip": ClipTask}


def get_task(config, workdir: str):
    """The task named by config.training.task, built from config (which it checks) for `workdir`."""
    name = config.training.task
    if name not in TASKS:
        raise ValueError(f"Unknown config.training.task {name!r}; choose one of {sorted(TASKS)}.")
    return TASKS[name](config, workdir)
