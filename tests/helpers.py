"""Small builders shared by tests (real stores on disk, no mocks)."""

from __future__ import annotations

import numpy as np

from skybatch.sources.base import Grid
from skybatch.store.spectra_store import consolidate, create_spectra_store, resize_spectra_store, write_rows


def make_random_store(path: str, n: int = 300, nwave: int = 64, chunk: int = 64, seed: int = 0) -> dict:
    """A spectra store of ``n`` random positive spectra; returns the arrays written."""
    rng = np.random.default_rng(seed)
    grid = Grid("linear", 3600.0, 0.8, nwave, "test")
    g = create_spectra_store(path, grid, chunk, {"skybatch_version": "test", "formats": ["test"], "manifest": "",
                                                 "provenance": {}})
    resize_spectra_store(g, n)
    data = {
        "flux": (1.0 + rng.standard_normal((n, nwave))).astype(np.float32),
        "ivar": rng.uniform(0.5, 2.0, (n, nwave)).astype(np.float32),
        "targetid": np.arange(n, dtype=np.int64) + 2**60,
        "healpix": rng.integers(0, 12, n).astype(np.int64),
        "z": rng.uniform(0, 2, n),
        "zwarn": np.zeros(n, np.int64),
    }
    write_rows(g, 0, data)
    consolidate(path)
    return data
