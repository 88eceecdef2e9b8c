"""The tile store contract: views by instrument and grid, one tile axis, plane reads, the schema check."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

from skybatch.store.schema import StoreSchemaError
from skybatch.store.tile_store import (
    TileStore,
    ViewSpec,
    assign_views,
    consolidate,
    create_tile_store,
    ensure_view,
    open_tile_group,
    open_tile_store,
    open_tile_tree,
    read_plane,
    resize_tiles,
    write_tile_chunk,
    write_tile_ids,
)

WCS_R = "".join(c.ljust(80) for c in ("CTYPE1  = 'RA---TAN'", "CTYPE2  = 'DEC--TAN'", "CRVAL1  = 150.0",
                                      "CRVAL2  = 2.0", "CRPIX1  = 8.0", "CRPIX2  = 8.0", "CDELT1  = -5.0E-05",
                                      "CDELT2  = 5.0E-05"))


def test_views_by_instrument_and_grid():
    one_grid = assign_views({}, {("rubin", 64, 64): {"g", "r"}, ("euclid", 64, 64): {"VIS", "H"}})
    assert {k: (v.name, v.bands) for k, v in one_grid.items()} == {
        ("rubin", 64, 64): ("rubin", ("u", "g", "r", "i", "z", "y")),
        ("euclid", 64, 64): ("euclid", ("VIS", "Y", "J", "H")),
    }
    # Euclid VIS and NISP on different grids: one view per camera
    split = assign_views({}, {("euclid", 120, 120): {"VIS"}, ("euclid", 40, 40): {"Y", "H"}})
    assert split[("euclid", 120, 120)].name == "euclid_vis" and split[("euclid", 120, 120)].bands == ("VIS",)
    assert split[("euclid", 40, 40)].name == "euclid_nisp" and split[("euclid", 40, 40)].bands == ("Y", "J", "H")
    # an existing view is reused; a new grid of its instrument gets a camera or a size name
    existing = {"rubin": one_grid[("rubin", 64, 64)], "euclid": one_grid[("euclid", 64, 64)]}
    later = assign_views(existing, {("rubin", 64, 64): {"u"}, ("rubin", 32, 32): {"r"}, ("euclid", 40, 40): {"J"}})
    assert later[("rubin", 64, 64)] is existing["rubin"]
    assert later[("rubin", 32, 32)].name == "rubin_32x32"
    assert later[("euclid", 40, 40)].name == "euclid_nisp"
    # another instrument: the bands seen, sorted; planes >= 4 MiB are sharded by default
    other = assign_views({}, {("hsc", 2048, 2048): {"HSC-R", "HSC-G"}})
    (v,) = other.values()
    assert v.name == "hsc" and v.bands == ("HSC-G", "HSC-R") and v.shard_planes
    assert not one_grid[("rubin", 64, 64)].shard_planes


def _store(path, specs: list[ViewSpec], tile_ids: list[str], chunk: int = 2):
    g = create_tile_store(path, chunk, {"skybatch_version": "test", "formats": ["npz"], "manifest": "",
                                        "provenance": {}})
    for s in specs:
        ensure_view(g, s, chunk, 0, {"skybatch_version": "test", "manifest": ""})
    resize_tiles(g, len(tile_ids))
    for s in specs:
        write_tile_ids(g[s.name], 0, tile_ids)
    g.attrs.update({"views": {s.name: s.to_attrs() for s in specs}, "n_tiles": len(tile_ids)})
    return g


def _fill(g, spec: ViewSpec, start: int, n: int, rng, present_band: int):
    nb = len(spec.bands)
    shape = (n, nb, spec.height, spec.width)
    data = {
        "image": rng.normal(size=shape).astype(np.float32),
        "noise": rng.uniform(0.5, 1.5, shape).astype(np.float32),
        "mask": rng.integers(0, 2**32 - 1, shape, dtype=np.uint32),
        "present": np.zeros((n, nb), bool),
        "wcs": np.full((n, nb), "", dtype=object),
        "source": np.full((n, nb), "", dtype=object),
    }
    data["present"][:, present_band] = True
    data["wcs"][:, present_band] = WCS_R
    data["source"][:, present_band] = "s3://bucket/file.npz"
    write_tile_chunk(g[spec.name], start, data)
    return data


@pytest.mark.parametrize("shard", [False, True])
def test_store_round_trip_and_plane_reads(tmp_path, shard):
    path = str(tmp_path / "t.zarr")
    rubin = ViewSpec("rubin", "rubin", ("u", "g", "r", "i", "z", "y"), 16, 16, shard)
    euclid = ViewSpec("euclid", "euclid", ("VIS", "Y", "J", "H"), 24, 24, shard)
    ids = ["a", "b", "c"]
    g = _store(path, [rubin, euclid], ids)
    rng = np.random.default_rng(0)
    r0 = _fill(g, rubin, 0, 2, rng, present_band=5)  # tiles a, b: band y
    r1 = _fill(g, rubin, 2, 1, rng, present_band=5)
    e0 = _fill(g, euclid, 0, 2, rng, present_band=1)  # tiles a, b: band Y; chunk of tile c never written
    consolidate(path)

    views = open_tile_store(path)
    ds = xr.open_zarr(path, group="rubin")
    assert list(ds.tile_id.values) == ids == list(views["euclid"].tile_id.values)
    np.testing.assert_array_equal(ds.image.values[:2], r0["image"])
    np.testing.assert_array_equal(ds.mask.values[2:], r1["mask"])
    assert ds.image.dtype == np.float32 and ds.mask.dtype == np.uint32
    if shard:
        assert ds.image.encoding["shards"] == (2, 6, 16, 16) and ds.image.encoding["chunks"] == (1, 1, 16, 16)
    else:
        assert ds.image.encoding["chunks"] == (2, 6, 16, 16)
    eu = views["euclid"]
    assert not eu.present.values[2].any() and np.isnan(eu.image.values[2]).all() and np.isinf(eu.noise.values[2]).all()
    assert eu.band_key.values.tolist() == ["euclid_vis", "euclid_y", "euclid_j", "euclid_h"]

    ts = TileStore(path)
    p = ts.plane("b", "y")  # lower-case y: Rubin's
    assert p.view == "rubin" and p.present and p.tile_index == 1
    np.testing.assert_array_equal(p.image, r0["image"][1, 5])
    np.testing.assert_array_equal(p.noise, r0["noise"][1, 5])
    np.testing.assert_allclose(p.weight, 1.0 / r0["noise"][1, 5] ** 2, rtol=1e-6)
    ra, dec = p.wcs.pixel_to_world_values(7.0, 7.0)
    assert (ra, dec) == pytest.approx((150.0, 2.0))
    q = read_plane(path, "a", "Y")  # upper-case Y: Euclid's
    assert q.view == "euclid" and q.present and q.source == "s3://bucket/file.npz"
    np.testing.assert_array_equal(q.image, e0["image"][0, 1])
    assert read_plane(path, "a", "euclid_y").band == "Y"
    assert not ts.plane("c", "VIS").present
    with pytest.raises(KeyError, match="zz"):
        ts.plane("zz", "r")
    with pytest.raises(KeyError, match="band 'K'"):
        ts.plane("a", "K")

    tree = open_tile_tree(path)
    assert set(tree.children) == {"rubin", "euclid"}


def test_schema_check_names_problems(tmp_path):
    path = str(tmp_path / "t.zarr")
    spec = ViewSpec("rubin", "rubin", ("g", "r"), 8, 8)
    other = ViewSpec("euclid", "euclid", ("VIS",), 8, 8)
    g = _store(path, [spec, other], ["a", "b"])
    consolidate(path)
    open_tile_store(path)  # a good store passes
    # a view whose noise has the wrong dtype and whose mask is gone
    v = open_tile_group(path)["rubin"]
    del v["mask"]
    v.create_array("noise", shape=(2, 2, 8, 8), dtype="float64", fill_value=np.inf, overwrite=True,
                   dimension_names=["tile", "band", "y", "x"])
    consolidate(path)
    with pytest.raises(StoreSchemaError) as e:
        open_tile_store(path)
    msg = str(e.value)
    assert "view 'rubin'" in msg and "missing variable 'mask'" in msg and "'noise' has dtype float64" in msg
    # views that do not share one tile axis
    path2 = str(tmp_path / "t2.zarr")
    g = _store(path2, [spec, other], ["a", "b"])
    write_tile_ids(g["euclid"], 0, ["b", "a"])
    consolidate(path2)
    with pytest.raises(StoreSchemaError, match="do not share one tile axis"):
        open_tile_store(path2)
    # not a tile store at all
    zarr.open_group(str(tmp_path / "x.zarr"), mode="w").attrs["skybatch_schema"] = "skybatch.spectra"
    with pytest.raises(StoreSchemaError, match="not a skybatch tile store"):
        open_tile_store(str(tmp_path / "x.zarr"))
