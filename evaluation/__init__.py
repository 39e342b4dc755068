"""Sample-quality evaluation: FID / KID / IS (metrics), the FID Inception-v3 network (inception), a torch-free
reader for its PyTorch weight file (pth), the domain classifier (classifier), the choice of feature network and
reference statistics (features), resumable rounds (resumable, files) and the eval / fid_stats modes (run)."""
from evaluation import inception, metrics, pth

__all__ = ['inception', 'metrics', 'pth']
