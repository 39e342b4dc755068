"""The command-line modes (main.py --mode): train (train.py), eval and fid_stats (evaluate.py), sample (sample.py)."""
