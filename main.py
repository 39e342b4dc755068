"""Entry point: python main.py --config CONFIG --mode MODE --workdir DIR [--config.a.b=value ...].

Each mode is a function (config, workdir, eval_folder) registered in MODES.
"""
from __future__ import annotations

import logging as py_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags


def _train(config, workdir, eval_folder):
    from modes.train import train
    train(config, workdir)


def _eval(config, workdir, eval_folder):
    from modes.evaluate import evaluate
    evaluate(config, workdir, eval_folder)


def _fid_stats(config, workdir, eval_folder):
    from modes.evaluate import fid_stats
    fid_stats(config, workdir, eval_folder)


def _train_classifier(config, workdir, eval_folder):
    from modes.train import train_classifier
    train_classifier(config, workdir)


def _sample(config, workdir, eval_folder):
    if "sd" in config:  # a published Stable Diffusion pipeline (configs/sd/pipeline.py)
        from modes.sd_sample import sample_pipeline
        sample_pipeline(config, workdir, eval_folder)
        return
    from modes.sample import sample
    sample(config, workdir, eval_folder)


def _import(config, workdir, eval_folder):
    from modes.import_checkpoint import import_checkpoint
    import_checkpoint(config, workdir)


MODES = {"train": _train, "eval": _eval, "fid_stats": _fid_stats, "train_classifier": _train_classifier,
         "sample": _sample, "import": _import}

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. configs/vp/ddpm_mnist.py.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples (created if absent).")
flags.DEFINE_enum("mode", "train", sorted(MODES), "What to run.")
flags.DEFINE_string("eval_folder", "eval", "Subfolder of workdir for evaluation results.")
flags.DEFINE_bool("multihost", False, "Join a multi-process run found by jax.distributed (TPU pod, SLURM, Open MPI). "
                  "Alternatively set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.")
flags.mark_flags_as_required(["config", "workdir"])


_REPO = os.path.dirname(os.path.abspath(__file__))


class _OnlyOurInfo(py_logging.Filter):
    """Keep INFO lines from this project; of libraries (the checkpointer logs every file it writes) only warnings."""

    def filter(self, record):
        return record.levelno >= py_logging.WARNING or record.pathname.startswith(_REPO)


def _parse_flags(argv):
    """absl flag parsing, with bad --config overrides reported in one line instead of a traceback."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _exit_with(str(e))
    except (AttributeError, KeyError) as e:  # raised by ml_collections for a field the config lacks
        field = str(e.args[0]).strip("'\"")
        bad = [a for a in argv if a.startswith("--config.") and field in a.split("=")[0]]
        _exit_with(f"{bad[0] if bad else field}: the config has no field {field!r}; "
                   f"the fields are listed in configs/defaults.py.")


def _exit_with(message: str):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def _prepare_workdir(path: str) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"--workdir {path} is a file, not a directory; choose another path.")
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise PermissionError(f"--workdir {path} is not writable.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.verbosity < 1:  # --verbosity=1 lets the libraries' INFO lines through as well
        logging.get_absl_handler().addFilter(_OnlyOurInfo())
    from training import parallel

    parallel.initialize_distributed(auto_detect=FLAGS.multihost)
    _prepare_workdir(FLAGS.workdir)
    MODES[FLAGS.mode](FLAGS.config, FLAGS.workdir, FLAGS.eval_folder)


def run():
    """app.run(main), turning the errors a user can fix into one line on stderr and exit status 1
    (and a run stopped by SIGTERM, after saving, into exit status 143)."""
    from datasets import DatasetError
    from training.preemption import Preempted
    from training.validation import ConfigError

    user_errors = (ConfigError, DatasetError, NotADirectoryError, PermissionError, ValueError, FloatingPointError)
    try:
        app.run(main, flags_parser=_parse_flags)
    except user_errors as e:
        logging.flush()
        _exit_with(str(e))
    except Preempted as e:  # not an error, but the job must not look finished to a scheduler that requeues it
        logging.flush()
        print(str(e), file=sys.stderr)
        sys.exit(128 + e.signum)


if __name__ == "__main__":
    run()
