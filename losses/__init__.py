"""Training objectives and the train/eval step builders."""
from losses.objectives import score_matching_loss
from losses.optim import get_optimizer, learning_rate_schedule
from losses.state import TrainState, create_train_state
from losses.step import get_step_fn, step_fn_from_config

__all__ = ["score_matching_loss", "get_optimizer", "learning_rate_schedule", "TrainState", "create_train_state",
           "get_step_fn", "step_fn_from_config"]
