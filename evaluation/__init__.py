"""Sample-quality evaluation: FID / KID / IS (metrics)."""
from evaluation import metrics

__all__ = ['metrics']
