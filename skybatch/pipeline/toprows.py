"""The top N rows of a score, and reading only those rows of a store's variables.

A top-N table (anomalies) needs N rows of each per-spectrum variable, not the variables: the rows are
chosen by :func:`top_rows` (a partition, not a sort of all n scores), blocks of scores can be
folded into a running selection with :class:`TopRows`, and :func:`take_rows` reads those rows only
(an orthogonal selection, so only the chunks/shards holding them are fetched).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["TopRows", "take_rows", "top_rows"]


def _key(score: Any) -> np.ndarray:
    """Higher score first; NaN last (as -inf)."""
    return np.nan_to_num(np.asarray(score, np.float64), nan=-np.inf)


def top_rows(score: Any, top: int) -> np.ndarray:
    """Indices of the ``top`` highest scores, highest first, ties in row order, NaN as -inf.

    Equals ``np.argsort(-score, kind="stable")[:top]`` (NaN as -inf) at O(n) plus a sort of the
    selected: ``score`` (n,) float; returns (min(top, n),) int64.
    """
    s = _key(score).ravel()
    k = max(0, min(int(top), s.size))
    if k == 0:
        return np.zeros(0, np.int64)
    if k < s.size:
        kth = np.partition(-s, k - 1)[k - 1]  # the k-th largest score, negated
        cand = np.flatnonzero(-s <= kth)  # ascending rows, every tie at the boundary included
    else:
        cand = np.arange(s.size)
    return cand[np.argsort(-s[cand], kind="stable")][:k].astype(np.int64)


class TopRows:
    """A running :func:`top_rows` over blocks of rows given in increasing row order.

    ``add(start, score, **columns)`` takes the block's (m,) score and any (m, ...) per-row columns
    (kept for the selected rows only); ``rows``, ``score`` and ``columns`` then hold the top
    ``top`` so far in row order, and :meth:`ranked` ranks them as :func:`top_rows` of the whole
    score would. Memory: O(top + block), whatever the number of rows.
    """

    def __init__(self, top: int) -> None:
        self.top = int(top)
        self.rows = np.zeros(0, np.int64)
        self.score = np.zeros(0, np.float64)
        self.columns: dict[str, np.ndarray] = {}

    def add(self, start: int, score: Any, **columns: Any) -> None:
        s = np.asarray(score, np.float64).ravel()
        if self.rows.size and start <= int(self.rows[-1]):
            raise ValueError(f"blocks must come in increasing row order; got start {start} after row {self.rows[-1]}")
        rows = np.concatenate([self.rows, np.arange(start, start + s.size, dtype=np.int64)])  # ascending
        allscore = np.concatenate([self.score, s])
        keep = np.sort(top_rows(allscore, self.top))  # held in row order, so ties rank in row order
        cols = {}
        for k, v in columns.items():
            v = np.asarray(v)
            prev = self.columns.get(k, v[:0])
            if len(prev) != self.rows.size or len(v) != s.size:
                raise ValueError(f"column {k!r}: give the same columns, a value per row, with every block")
            cols[k] = np.concatenate([prev, v])[keep]
        self.rows, self.score, self.columns = rows[keep], allscore[keep], cols

    def ranked(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(rows, score, columns) of the top rows so far, highest score first."""
        rank = top_rows(self.score, self.top)
        return self.rows[rank], self.score[rank], {k: v[rank] for k, v in self.columns.items()}


def take_rows(array: Any, rows: Any) -> np.ndarray:
    """``array[rows]`` (along the first axis, in the order of ``rows``) reading only those rows.

    ``array``: a NumPy array or a Zarr array (read with one orthogonal selection of the sorted,
    distinct rows, so only the chunks holding them are fetched); ``rows`` (k,) int.
    """
    r = np.asarray(rows, np.int64).ravel()
    if r.size == 0:
        return np.asarray(array[:0])
    uniq = np.unique(r)
    if hasattr(array, "oindex"):
        got = np.asarray(array.oindex[(uniq,) + (slice(None),) * (len(array.shape) - 1)])
    else:
        got = np.asarray(array)[uniq]
    return got[np.searchsorted(uniq, r)]
