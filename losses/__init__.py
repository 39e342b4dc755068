"""Training objectives: denoising score matching in its continuous, DDPM and SMLD forms (objectives.py)."""
from losses.objectives import check_options, drop_labels, score_matching_loss

__all__ = ["check_options", "drop_labels", "score_matching_loss"]
