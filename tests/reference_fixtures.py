"""Where the reference implementations' fixtures live (../shared/fixtures beside the checkout, or
$SCORE_SDE_FIXTURES), and a pytest skip naming what is missing when they are absent."""
import os

import numpy as np
import pytest

ROOT = os.environ.get("SCORE_SDE_FIXTURES") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared", "fixtures")


def fixture_path(*parts: str) -> str:
    """The path of a fixture file or folder; skips the test, naming it, when it is not there."""
    path = os.path.join(ROOT, *parts)
    if not os.path.exists(path):
        pytest.skip(f"reference fixture {path} is not present (set SCORE_SDE_FIXTURES to its folder)")
    return path


def load_io(*parts: str) -> dict[str, np.ndarray]:
    """A fixture's io.npz (or another .npz) as a dict of arrays."""
    with np.load(fixture_path(*parts)) as data:
        return dict(data)


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (0, 2, 3, 1))


def relative_error(ours, reference) -> float:
    """max |ours - reference| / max |reference|: the figure the fixtures' 1e-4 tolerance is stated in."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))
