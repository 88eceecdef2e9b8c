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


# -- sharded layout at DR1 size ----------------------------------------------------------------


def test_dr1_size_store_is_at_most_1e4_objects_per_variable():
    """18 M x 7781 spectra at the default chunk_spectra: shards of 2048 spectra, ~4 MiB inner chunks."""
    import math

    from skybatch.pipeline.ingest import IngestConfig
    from skybatch.store.spectra_store import pixel_layout

    n_spectra, n_wave = 18_000_000, 7781
    chunk = IngestConfig(sources=["x"], store="y").chunk_spectra
    shard, inner = pixel_layout(chunk, n_wave)
    objects = math.ceil(n_spectra / shard)  # one object per shard, for every variable (columns: chunk = shard)
    assert objects <= 10_000, objects
    assert shard % inner == 0
    inner_bytes = inner * n_wave * 4
    assert 2**20 <= inner_bytes <= 4 * 2**20, inner_bytes
    # a partial read of one inner chunk is one ranged GET (plus the shard index, cached per reader)
    assert shard // inner >= 8


def test_sharded_store_round_trips_and_writes_whole_shards(tmp_path, monkeypatch):
    """Pixel arrays are sharded (shard = chunk_spectra rows, inner chunks from the byte target); values exact."""
    monkeypatch.setenv("SKYBATCH_CHUNK_BYTES", str(8 * 64 * 4))  # 8 spectra of 64 px per inner chunk
    p = tmp_path / "s.zarr"
    g = _store(p, n=40, chunk=16)
    assert g.attrs["shard_spectra"] == 16 and g.attrs["inner_chunk_spectra"] == 8
    assert g["flux"].shards == (16, 64) and g["flux"].chunks == (8, 64)
    assert g["targetid"].chunks == (16,) and g["targetid"].shards is None
    rng = np.random.default_rng(1)
    flux = rng.standard_normal((40, 64)).astype(np.float32)
    for a in range(0, 40, 16):  # one write per shard, the last one partial (the store's tail)
        write_rows(g, a, {"flux": flux[a:a + 16], "targetid": np.arange(a, min(a + 16, 40), dtype=np.int64)})
    consolidate(str(p))
    ds = xr.open_zarr(p)
    np.testing.assert_array_equal(ds.flux.values, flux)
    assert ds.targetid.values.tolist() == list(range(40))
    files = [f for f in (p / "flux" / "c").rglob("*") if f.is_file()]
    assert len(files) == 3  # 40 rows in shards of 16: three objects, not five inner chunks


def test_chunk_bytes_setting_is_checked(monkeypatch):
    from skybatch.store.spectra_store import pixel_layout

    monkeypatch.setenv("SKYBATCH_CHUNK_BYTES", "lots")
    with pytest.raises(ValueError, match="SKYBATCH_CHUNK_BYTES"):
        pixel_layout(2048, 7781)
    monkeypatch.setenv("SKYBATCH_CHUNK_BYTES", str(300 * 7781 * 4))
    assert pixel_layout(300, 7781) == (300, 300)
    monkeypatch.setenv("SKYBATCH_CHUNK_BYTES", str(128 * 7781 * 4))
    assert pixel_layout(300, 7781) == (300, 100)  # the largest divisor of the shard that fits


# -- crash-safe creation -----------------------------------------------------------------------


_KILL_AT_ATTRS = r"""
import os, sys
import zarr.core.attributes as za
real = za.Attributes.put
def put(self, d):
    if "skybatch_store" in d:  # the final attrs write: die before it, as kill -9 would
        os._exit(9)
    return real(self, d)
za.Attributes.put = put
from skybatch.sources.base import Grid
from skybatch.store.spectra_store import create_spectra_store
create_spectra_store(sys.argv[1], Grid("linear", 3600.0, 0.8, 64, "test"), 4,
                     {"skybatch_version": "test", "formats": ["desi"], "manifest": "m", "provenance": {}})
"""


def test_creation_killed_before_attrs_is_completed(tmp_path):
    """A creation killed between the arrays and the attrs write leaves a marked store the next create completes."""
    import subprocess
    import sys

    from skybatch.store.identity import store_identity
    from skybatch.store.spectra_store import unfinished_creation

    p = str(tmp_path / "s.zarr")
    proc = subprocess.run([sys.executable, "-c", _KILL_AT_ATTRS, p], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    g = open_group(p, mode="r")
    assert "flux" in g and "skybatch_store" not in g.attrs  # arrays made, attrs not
    pending = unfinished_creation(p)
    assert pending is not None
    g = create_spectra_store(p, GRID, 4, ATTRS)
    assert g.attrs["skybatch_store"]["uuid"] == pending["identity"]["uuid"]
    assert "skybatch_creating" not in g.attrs and g.attrs["per_spectrum_columns"]["targetid"] == "int64"
    assert store_identity(p)["uuid"] == pending["identity"]["uuid"]
    with pytest.raises(FileExistsError):  # a finished store is never created over
        create_spectra_store(p, GRID, 4, ATTRS)
