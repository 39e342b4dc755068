"""Sample-quality evaluation: FID / KID / IS (metrics), the FID Inception-v3 network
(inception) and a torch-free reader for its PyTorch weight file (pth)."""
from evaluation import inception, metrics, pth

__all__ = ['inception', 'metrics', 'pth']
