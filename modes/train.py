"""`--mode train` (whatever config.training.task names) and `--mode train_classifier` (the classifier, as
users of the earlier releases know it), both through the one training loop."""
from __future__ import annotations

import os

import tasks
from evaluation.classifier import WEIGHTS_FILE
from tasks.classifier import ClassifierTask
from training import loop


def train(config, workdir: str):
    """Train (or resume) the task of config.training.task in `workdir`; returns the final train state."""
    return loop.train(tasks.get_task(config, workdir))


def train_classifier(config, workdir: str) -> str:
    """Train (or resume) the classifier of config.classifier; returns the path of its exported weights."""
    task = ClassifierTask(config, workdir)
    loop.train(task)
    return os.path.join(task.workdir, WEIGHTS_FILE)
