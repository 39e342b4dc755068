"""Sample-quality evaluation: FID / KID / IS (metrics) and the FID Inception-v3 (inception)."""
from evaluation import inception, metrics

__all__ = ['inception', 'metrics']
