"""Sample-quality evaluation: FID / KID / IS (metrics), the FID Inception-v3 network (inception) and its weight
file (fid_weights), the domain classifier's files and uses (classifier), the choice of feature network and
reference statistics (features), and resumable rounds (resumable). The eval and fid_stats modes are
modes/evaluate.py."""
