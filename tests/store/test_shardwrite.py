"""Whole shards (and column chunks) encoded by skybatch.store.shardwrite are byte for byte what zarr writes."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

from skybatch.sources.base import Grid
from skybatch.store.shardwrite import encode_shard, plan_shard_writes, shard_writer
from skybatch.store.spectra_store import consolidate, create_spectra_store, open_group, resize_spectra_store, write_rows

ATTRS = {"skybatch_version": "test", "formats": ["desi"], "manifest": "m", "provenance": {}}


def _data(n: int, nw: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    flux = rng.standard_normal((n, nw)).astype(np.float32)
    flux[3, 5] = np.float32(-0.0)
    ivar = rng.gamma(2.0, 1.0, (n, nw)).astype(np.float32)
    ivar[:, :7] = 0.0  # a run of zeros, as at the ends of an arm
    mask = np.zeros((n, nw), np.uint32)
    mask[::5, 11] = np.uint32(1 << 31 | 1 << 8)
    spectype = np.array([("QSO", "GALAXY", "", "STAR", "ébauche")[i % 5] for i in range(n)], dtype=object)
    return {"flux": flux, "ivar": ivar, "mask": mask, "targetid": np.arange(n, dtype=np.int64) * 2**40,
            "z": rng.uniform(0, 3, n), "spectype": spectype}


def _objects(root) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("c/**/*")) if f.is_file()}


@pytest.mark.parametrize("per_shard", [2, 3, 6])  # inner chunks per shard (Morton order: 3 and 6 are not powers of 2)
def test_whole_shards_are_the_bytes_zarr_writes(tmp_path, monkeypatch, per_shard):
    nw, inner = 50, 4
    shard = inner * per_shard
    n = shard * 3 + 5  # three whole shards and a shorter tail shard (written by zarr)
    monkeypatch.setenv("SKYBATCH_CHUNK_BYTES", str(inner * nw * 4))
    grid = Grid("linear", 3600.0, 0.8, nw, "test")
    data = _data(n, nw)
    stores = {}
    for how in ("zarr", "direct"):
        p = tmp_path / f"{how}.zarr"
        g = create_spectra_store(str(p), grid, shard, ATTRS)
        resize_spectra_store(g, n)
        arrays = {k: g[k].with_config({"write_empty_chunks": True}) for k in data}
        assert arrays["flux"].shards == (shard, nw) and arrays["flux"].chunks == (inner, nw)
        if how == "direct":
            assert all(shard_writer(a) is not None for a in arrays.values())
            for a in range(0, n, shard):
                write_rows(arrays, a, {k: v[a : a + shard] for k, v in data.items()})
        else:
            for a in range(0, n, shard):
                for k, v in data.items():
                    arrays[k][a : a + shard] = v[a : a + shard]
        consolidate(str(p))
        stores[how] = p
    zarr_objects, direct_objects = _objects(stores["zarr"]), _objects(stores["direct"])
    assert set(zarr_objects) == set(direct_objects) and len(zarr_objects) >= 4 * 4
    for key, b in zarr_objects.items():
        assert direct_objects[key] == b, key
    ds = xr.open_zarr(stores["direct"])
    for k in ("flux", "ivar", "mask", "targetid", "z"):
        np.testing.assert_array_equal(ds[k].values, data[k])
    assert ds["spectype"].values.tolist() == data["spectype"].tolist()


def test_only_whole_shards_of_known_layouts_are_taken(tmp_path, monkeypatch):
    monkeypatch.setenv("SKYBATCH_CHUNK_BYTES", str(4 * 50 * 4))
    grid = Grid("linear", 3600.0, 0.8, 50, "test")
    g = create_spectra_store(str(tmp_path / "s.zarr"), grid, 8, ATTRS)
    resize_spectra_store(g, 20)
    flux = g["flux"]
    assert shard_writer(flux) is None  # zarr's default write_empty_chunks=False: zarr decides what to store
    w = shard_writer(flux.with_config({"write_empty_chunks": True}))
    assert w is not None and (w.shard_rows, w.chunk_rows) == (8, 4)
    rows = np.zeros((16, 50), np.float32)
    assert plan_shard_writes(flux, w, 0, rows) is not None
    assert plan_shard_writes(flux, w, 4, rows[:8]) is None  # not on a shard boundary
    assert plan_shard_writes(flux, w, 16, rows[:4]) is None  # the tail shard: zarr pads it
    assert plan_shard_writes(flux, w, 0, rows.astype(np.float64)) is None
    assert shard_writer(g["targetid"]) is None  # zarr's default write_empty_chunks=False
    tid = shard_writer(g["targetid"].with_config({"write_empty_chunks": True}))
    assert tid is not None and not tid.sharded and tid.shard_rows == 8
    assert plan_shard_writes(g["targetid"], tid, 0, np.arange(8, dtype=np.int32)) is None  # another dtype
    with pytest.raises(ValueError, match="rows"):
        encode_shard(w, rows[:5])
    plain = zarr.create_array(str(tmp_path / "plain.zarr"), shape=(16, 50), chunks=(4, 50), shards=(8, 50),
                              dtype="float32", compressors=zarr.codecs.GzipCodec(), config={"write_empty_chunks": True})
    assert shard_writer(plain) is None  # a codec this module does not encode
    assert open_group(str(tmp_path / "s.zarr"))["flux"].shape == (20, 50)


def test_tile_units_are_the_bytes_zarr_writes(tmp_path):
    """4-d unit chunks (tile, band, y, x) and 2-d string columns, as the tile store lays them out."""
    from skybatch.store.codecs import PIXEL_CODEC
    from skybatch.store.shardwrite import write_region

    rng = np.random.default_rng(3)
    n, nb, h, w, unit = 10, 3, 16, 12, 4  # two whole units and a shorter tail unit
    data = {
        "image": rng.standard_normal((n, nb, h, w)).astype(np.float32),
        "mask": rng.integers(0, 3, (n, nb, h, w)).astype(np.uint32),
        "present": rng.random((n, nb)) > 0.3,
        "wcs": np.array([[f"CRVAL1  = {i}.{b}" for b in range(nb)] for i in range(n)], dtype=object),
    }
    data["image"][1] = np.nan  # an all-fill tile inside a unit
    roots = {}
    for how in ("zarr", "direct"):
        root = zarr.open_group(str(tmp_path / f"{how}.zarr"), mode="w-")
        cfg = {"write_empty_chunks": True}
        arrays = {
            "image": root.create_array("image", shape=(n, nb, h, w), chunks=(unit, nb, h, w), dtype="float32",
                                       fill_value=np.nan, compressors=PIXEL_CODEC, config=cfg),
            "mask": root.create_array("mask", shape=(n, nb, h, w), chunks=(unit, nb, h, w), dtype="uint32",
                                      fill_value=0, config=cfg),
            "present": root.create_array("present", shape=(n, nb), chunks=(unit, nb), dtype="bool", config=cfg),
            "wcs": root.create_array("wcs", shape=(n, nb), chunks=(unit, nb), dtype=str, fill_value="", config=cfg),
        }
        for a in range(0, n, unit):
            part = {k: v[a : a + unit] for k, v in data.items()}
            if how == "direct":
                write_region(arrays, a, part)
            else:
                for k, v in part.items():
                    arrays[k][a : a + unit] = v
        roots[how] = tmp_path / f"{how}.zarr"
    z, d = _objects(roots["zarr"]), _objects(roots["direct"])
    assert set(z) == set(d) and len(z) == 4 * 3
    for key, b in z.items():
        assert d[key] == b, key
