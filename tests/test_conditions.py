"""Conditions computed from images (data_sources/conditions.py) and the edge-agreement metric, on small arrays
with known answers."""
import numpy as np
import pytest
from PIL import Image

from data_sources import conditions
from data_sources.base import DatasetError
from data_sources.preprocess import ImageFormat


def square(size=12, lo=3, hi=9):
    """One (1, size, size, 1) image: a white square on black, rows / columns lo..hi-1."""
    x = np.zeros((1, size, size, 1), np.float32)
    x[0, lo:hi, lo:hi] = 1.0
    return x


def ring(size=12, lo=3, hi=9):
    """The square's one-pixel boundary: rows / columns lo and hi-1 within lo..hi-1."""
    r = np.zeros((1, size, size, 1), np.float32)
    r[0, lo:hi, lo:hi] = 1.0
    r[0, lo + 1:hi - 1, lo + 1:hi - 1] = 0.0
    return r


def test_canny_finds_the_squares_boundary():
    np.testing.assert_array_equal(conditions.compute("canny", square()), ring())
    assert conditions.canny(np.zeros((2, 8, 8, 3))).sum() == 0  # no edges in a flat image, one channel out


def test_scribble_is_the_boundary_dilated_and_mask_the_foreground():
    thick = np.zeros((1, 12, 12, 1), np.float32)
    thick[0, 2:10, 2:10] = 1.0
    thick[0, 5:7, 5:7] = 0.0  # the ring grown by one pixel each way leaves the 2x2 centre
    np.testing.assert_array_equal(conditions.compute("scribble", square()), thick)
    np.testing.assert_array_equal(conditions.compute("mask", 0.8 * square()), square())
    np.testing.assert_array_equal(conditions.compute("mask", 0.4 * square()), 0 * square())


def test_dilate_by_radius():
    point = np.zeros((1, 7, 7), np.float32)
    point[0, 3, 3] = 1
    assert conditions.dilate(point, 2).sum() == 25 and conditions.dilate(point, 0).sum() == 1


def test_edge_f1_with_tolerance():
    edges = ring()
    shifted = np.roll(edges, 1, axis=2)  # one pixel right: within tolerance 1, not 0
    assert conditions.edge_f1(edges, edges)[0] == 1.0
    assert conditions.edge_f1(shifted, edges, tolerance=1)[0] == 1.0
    assert conditions.edge_f1(shifted, edges, tolerance=0)[0] < 1.0
    half = edges.copy()
    half[0, :6] = 0  # the bottom half of the ring: precision 1, recall 10/20 -> F1 = 2/3
    np.testing.assert_allclose(conditions.edge_f1(half, edges, tolerance=0), [2 / 3])
    empty = np.zeros_like(edges)
    np.testing.assert_array_equal(conditions.edge_f1(np.concatenate([empty, empty]),
                                                     np.concatenate([empty, edges])), [1.0, 0.0])


def test_paired_conditions_by_file_name(tmp_path):
    (tmp_path / "cond").mkdir()
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(tmp_path / "cond" / "a.png")
    Image.fromarray(np.full((4, 4), 50, np.uint8)).save(tmp_path / "cond" / "b.png")
    out = conditions.paired_conditions(str(tmp_path / "cond"), ["data/b.jpg", "data/x/a.png"], ImageFormat(4, 1))
    assert out.shape == (2, 4, 4, 1) and out[0].max() == 50 and out[1].min() == 200
    with pytest.raises(DatasetError, match=r"No condition image named c\.\* in .* for the data file data/c\.png"):
        conditions.paired_conditions(str(tmp_path / "cond"), ["data/c.png"], ImageFormat(4, 1))
