"""Training objectives: denoising score matching in its continuous, DDPM, SMLD and EDM forms (objectives.py); the
discrete VP chain's variational bound (vlb.py), its 'vlb' and 'hybrid' training losses (chain.py) and VDM's
continuous bound (vdm.py)."""
from losses.objectives import EDMLevels, check_options, drop_labels, score_matching_loss

__all__ = ["EDMLevels", "check_options", "drop_labels", "score_matching_loss"]
