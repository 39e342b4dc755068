"""Training objectives: denoising score matching in its continuous, DDPM and SMLD forms (objectives.py); the
discrete VP chain's variational bound (vlb.py), its 'vlb' and 'hybrid' training losses (chain.py) and VDM's
continuous bound (vdm.py)."""
from losses.objectives import check_options, drop_labels, score_matching_loss

__all__ = ["check_options", "drop_labels", "score_matching_loss"]
