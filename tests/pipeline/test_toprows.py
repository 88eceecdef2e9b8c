"""Top-N rows: a partition (and a running selection over blocks) ranks as a full stable sort would, and the
rows are read alone: a Zarr array whose every other chunk is corrupt still gives the top rows."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr

from skybatch.pipeline.toprows import TopRows, take_rows, top_rows


def _sorted_top(score, top):
    return np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")[:top]


def test_top_rows_equals_a_stable_sort_with_ties_and_nan():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(0, 60))
        score = rng.integers(-3, 4, n).astype(float)  # many ties
        score[rng.random(n) < 0.2] = np.nan
        top = int(rng.integers(0, 70))
        assert top_rows(score, top).tolist() == _sorted_top(score, top).tolist()


def test_running_top_rows_over_blocks_equals_the_whole():
    rng = np.random.default_rng(4)
    for _ in range(100):
        n = int(rng.integers(1, 300))
        score = np.round(rng.normal(size=n), 1)
        score[rng.random(n) < 0.1] = np.nan
        extra = rng.normal(size=(n, 2))
        top, best, a = int(rng.integers(1, 40)), None, 0
        best = TopRows(top)
        while a < n:
            b = min(n, a + int(rng.integers(1, 50)))
            best.add(a, score[a:b], extra=extra[a:b])
            a = b
        rows, s, cols = best.ranked()
        want = _sorted_top(score, top)
        assert rows.tolist() == want.tolist()
        np.testing.assert_array_equal(s, score[want])
        np.testing.assert_array_equal(cols["extra"], extra[want])
    with pytest.raises(ValueError, match="increasing row order"):
        best.add(0, [1.0], extra=np.zeros((1, 2)))


def test_take_rows_reads_only_the_chunks_of_those_rows(tmp_path):
    path = str(tmp_path / "a.zarr")
    a = zarr.create_array(path, shape=(100, 3), chunks=(10, 3), dtype="float64")
    values = np.arange(300, dtype=float).reshape(100, 3)
    a[:] = values
    rows = np.array([57, 3, 55, 3, 91])  # chunks 0, 5 and 9; order and repeats kept
    for k in range(10):
        if k not in (0, 5, 9):
            with open(os.path.join(path, "c", str(k), "0"), "wb") as f:
                f.write(b"not a compressed chunk")
    a = zarr.open_array(path, mode="r")
    np.testing.assert_array_equal(take_rows(a, rows), values[rows])
    with pytest.raises((RuntimeError, ValueError)):  # the whole variable cannot be read: take_rows did not
        a[:]
    np.testing.assert_array_equal(take_rows(values, rows), values[rows])
    assert take_rows(a, []).shape == (0, 3)
