"""Running experiments: the train loop, checkpoints, device mesh, writers, config checks."""
