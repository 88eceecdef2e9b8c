"""``*_store_exists``: True only for a store of that kind; False for nothing, an array, or another kind."""

from __future__ import annotations

import numpy as np
import zarr

from skybatch.store.difference_store import difference_store_exists
from skybatch.store.spectra_store import store_exists
from skybatch.store.tile_store import tile_store_exists

from ..helpers import make_random_store

CHECKS = (store_exists, tile_store_exists, difference_store_exists)


def test_exists_checks_tell_the_kinds_apart(tmp_path):
    spectra = str(tmp_path / "s.zarr")
    make_random_store(spectra, n=8, nwave=4, chunk=4)
    assert [f(spectra) for f in CHECKS] == [True, False, False]
    assert [f(str(tmp_path / "nothing.zarr")) for f in CHECKS] == [False, False, False]
    array = str(tmp_path / "array.zarr")
    zarr.create_array(array, shape=(3,), dtype="f4")[:] = np.arange(3)
    assert [f(array) for f in CHECKS] == [False, False, False]
    plain = str(tmp_path / "plain.zarr")
    zarr.open_group(plain, mode="w").attrs["skybatch_schema"] = "something-else"
    assert [f(plain) for f in CHECKS] == [False, False, False]
