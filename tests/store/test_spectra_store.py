"""The spectra store contract: plain xarray.open_zarr reads it; the schema check names problems."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from skybatch.sources.base import Grid
from skybatch.store.schema import StoreSchemaError, load_schema
from skybatch.store.spectra_store import (
    consolidate, create_spectra_store, open_group, open_store, resize_spectra_store, write_rows,
)

GRID = Grid("linear", 3600.0, 0.8, 64, "test")
ATTRS = {"skybatch_version": "test", "formats": ["desi"], "manifest": "m", "provenance": {}}


def _store(path, n=10, chunk=4):
    g = create_spectra_store(str(path), GRID, chunk, ATTRS)
    resize_spectra_store(g, n)
    consolidate(str(path))
    return g


def test_open_zarr_sees_contract(tmp_path):
    p = tmp_path / "s.zarr"
    g = _store(p)
    tid = np.array([2**62 + 12345, 1, 2, 3], dtype=np.int64)  # > 2**53: must stay exact
    write_rows(g, 0, {"flux": np.full((4, 64), 0.0, np.float32), "ivar": np.ones((4, 64), np.float32),
                      "targetid": tid, "spectype": np.array(["QSO", "GALAXY", "STAR", ""], object)})
    with _nowarn():  # plain open_zarr: no consolidated-metadata warning
        ds = xr.open_zarr(p)
    assert ds.sizes == {"spectrum": 10, "wavelength": 64}
    assert set(ds.data_vars) == {"flux", "ivar", "mask"}
    schema = load_schema()
    assert set(schema["coords"]) <= set(ds.coords)
    assert ds.flux.dtype == np.float32 and ds.mask.dtype == np.uint32
    assert ds.targetid.values[:4].tolist() == tid.tolist()
    assert ds.spectype.values[:3].tolist() == ["QSO", "GALAXY", "STAR"]
    # zeros are data, not missing values
    assert np.all(ds.flux.values[:4] == 0.0)
    np.testing.assert_allclose(ds.wavelength.values, 3600.0 + 0.8 * np.arange(64))
    assert ds.attrs["grid"]["n"] == 64
    open_store(str(p))  # passes the schema check


class _nowarn:
    def __enter__(self):
        import warnings

        self._c = warnings.catch_warnings()
        self._c.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *a):
        return self._c.__exit__(*a)


def test_resize_keeps_rows(tmp_path):
    p = tmp_path / "s.zarr"
    g = _store(p, n=6)
    write_rows(g, 4, {"z": np.array([0.5, 1.5])})
    resize_spectra_store(open_group(str(p)), 13)
    consolidate(str(p))
    ds = xr.open_zarr(p)
    assert ds.sizes["spectrum"] == 13
    assert ds.z.values[4:6].tolist() == [0.5, 1.5]
    assert np.isnan(ds.z.values[7])  # unwritten rows: z unknown


def test_schema_check_names_problems(tmp_path):
    p = tmp_path / "s.zarr"
    _store(p)
    ds = xr.open_zarr(p).drop_vars("ivar")
    ds.attrs.pop("provenance")
    from skybatch.store.schema import check_spectra_store

    with pytest.raises(StoreSchemaError) as e:
        check_spectra_store(ds, "mystore")
    msg = str(e.value)
    assert "mystore" in msg and "'ivar'" in msg and "'provenance'" in msg
    with pytest.raises(StoreSchemaError, match="no Zarr store"):
        open_store(str(tmp_path / "missing.zarr"))
