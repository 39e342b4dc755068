"""Entry point: python main.py --config CONFIG --mode MODE --workdir DIR [--config.a.b=value ...]."""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. configs/vp/ddpm_mnist.py.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples (created if absent).")
flags.DEFINE_enum("mode", "train", ["train"], "What to run.")
flags.DEFINE_string("eval_folder", "eval", "Subfolder of workdir for evaluation results.")
flags.mark_flags_as_required(["config", "workdir"])


def _prepare_workdir(path: str) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"--workdir {path} is a file, not a directory; choose another path.")
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise PermissionError(f"--workdir {path} is not writable.")


def main(argv):
    del argv
    from training import parallel

    parallel.maybe_initialize_distributed()
    _prepare_workdir(FLAGS.workdir)
    if FLAGS.mode == "train":
        from training.loop import train
        train(FLAGS.config, FLAGS.workdir)


def run():
    """app.run(main), turning the errors a user can fix into one line on stderr and exit status 1."""
    from datasets import DatasetError
    from training.validation import ConfigError

    user_errors = (ConfigError, DatasetError, NotADirectoryError, PermissionError, ValueError, FloatingPointError)
    try:
        app.run(main)
    except user_errors as e:
        logging.flush()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run()
