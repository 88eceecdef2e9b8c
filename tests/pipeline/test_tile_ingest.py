"""Tile ingest end to end on the session Dask cluster: real .npz and FITS tiles in, a Zarr tile store out."""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from astropy.wcs import WCS

from skybatch.pipeline.tile_ingest import (
    TileIngestConfig,
    execute_tile_plan,
    ingest_tiles,
    plan_tile_ingest,
    run_with_client,
)
from skybatch.sample.images import calexp_headers
from skybatch.store.manifest import Manifest
from skybatch.store.tile_store import TileStore, open_tile_store, wcs_from_header

SIZE = 24


@pytest.fixture(scope="module")
def npz_tiles(tmp_path_factory):
    """Six generated tiles in ten bands, written as Rubin and Euclid .npz files (some bands missing)."""
    from skybatch.sample.tiles import make_multiband_tiles, write_npz_tiles

    out = tmp_path_factory.mktemp("npz")
    tiles = make_multiband_tiles(n_tiles=6, size=SIZE, seed=2, p_missing_band=0.1, keep_truth=False)
    paths = write_npz_tiles(tiles, out)
    assert not tiles.band_present.all()  # the test needs missing bands
    return tiles, out, paths


def _tan(n: int, scale_arcsec: float, ra: float = 150.1, dec: float = 2.2) -> fits.Header:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [n / 2 + 0.3, n / 2 - 0.2]
    w.wcs.cdelt = [-scale_arcsec / 3600, scale_arcsec / 3600]
    return w.to_header()


def write_calexp(path, image, variance, mask, band, *, tile=None, compressed=False, scale=0.2):
    """An LSST calexp-like file: primary (FILTER, INSTRUME) + IMAGE (WCS, BUNIT) + MASK + VARIANCE, big-endian."""
    ph, h, mh = calexp_headers(_tan(image.shape[0], scale), band, bunit="nJy", **({"TILE_ID": tile} if tile else {}))
    if compressed:
        hdus = [fits.CompImageHDU(image.astype("f4"), header=h, compression_type="GZIP_2", quantize_level=0),
                fits.CompImageHDU(mask.astype("i4"), header=mh),
                fits.CompImageHDU(variance.astype("f4"), name="VARIANCE", compression_type="GZIP_2", quantize_level=0)]
    else:
        hdus = [fits.ImageHDU(image.astype(">f4"), header=h), fits.ImageHDU(mask.astype(">i4"), header=mh),
                fits.ImageHDU(variance.astype(">f4"), name="VARIANCE")]
    fits.HDUList([ph, *hdus]).writeto(path, overwrite=True)


def write_euclid(path, sci, rms, flg, band, *, tile, scale):
    """A Euclid-like file: primary (TELESCOP, INSTRUME, FILTER, TILEID) + SCI (WCS) + RMS + FLG, big-endian."""
    ph = fits.PrimaryHDU()
    ph.header["TELESCOP"] = "EUCLID"
    ph.header["INSTRUME"] = "VIS" if band == "VIS" else "NISP"
    ph.header["FILTER"] = band if band == "VIS" else f"NIR_{band}"
    ph.header["TILEID"] = tile
    fits.HDUList([
        ph, fits.ImageHDU(sci.astype(">f4"), header=_tan(sci.shape[0], scale), name="SCI"),
        fits.ImageHDU(rms.astype(">f4"), name="RMS"), fits.ImageHDU(flg.astype(">i4"), name="FLG"),
    ]).writeto(path, overwrite=True)


def _noisy(rng, n):
    return rng.normal(size=(n, n)).astype(np.float32), rng.uniform(0.5, 2.0, (n, n)).astype(np.float32)


def chunk_files(store: str) -> dict[str, float]:
    return {p: os.path.getmtime(p) for p in glob.glob(store + "/*/image/c/**/*", recursive=True) if os.path.isfile(p)}


def load_views(store: str, storage_options=None) -> dict[str, xr.Dataset]:
    """Every view, schema-checked, loaded into memory (threads: no round trip through the cluster)."""
    return {k: v.load(scheduler="threads") for k, v in open_tile_store(store, storage_options).items()}


def assert_tile_stores_equal(a: str, b: str, storage_options_b=None) -> None:
    va = load_views(a)
    vb = load_views(b, storage_options_b)
    assert sorted(va) == sorted(vb)
    for name in va:
        da, db = va[name], vb[name]
        assert da.sizes == db.sizes, name
        for var in ("image", "noise", "mask", "present", "tile_id", "band", "wcs"):
            x, y = da[var].values, db[var].values
            if x.dtype.kind == "f":
                np.testing.assert_array_equal(x, y, err_msg=f"{name}.{var}")
            else:
                assert x.tolist() == y.tolist(), f"{name}.{var}"


def test_npz_round_trip_views_missing_bands_and_rerun(dask_client, npz_tiles, tmp_path):
    tiles, src, paths = npz_tiles
    store = str(tmp_path / "tiles.zarr")
    rep = ingest_tiles([str(src)], store, chunk_tiles=4, client=dask_client, progress=False)
    assert rep.exit_code == 0, rep.summary()
    assert rep.n_tiles == 6 and rep.n_bad_pixels == 0
    n_missing = int((~tiles.band_present).sum())
    assert rep.n_absent == n_missing
    assert rep.planes_written == tiles.band_present.sum()

    views = load_views(store)  # checks the schema and the shared tile axis
    assert sorted(views) == ["euclid", "rubin"]
    rubin = xr.open_zarr(store, group="rubin")  # plain xarray works too
    assert list(rubin.band.values) == list("ugrizy") and list(views["euclid"].band.values) == ["VIS", "Y", "J", "H"]
    assert rubin.image.encoding["chunks"] == (4, 6, SIZE, SIZE) and rubin.image.dtype == np.float32
    assert list(rubin.tile_id.values) == list(tiles.tile_id)
    assert list(views["euclid"].tile_id.values) == list(tiles.tile_id)  # matched by name, same index

    cx = (SIZE - 1) / 2.0
    for view in ("rubin", "euclid"):
        ds = views[view]
        for bi, key in enumerate(ds.band_key.values):
            b = tiles.bands.index(key)
            present = tiles.band_present[:, b]
            np.testing.assert_array_equal(ds.present.values[:, bi], present, err_msg=key)
            img, noise = ds.image.values[:, bi], ds.noise.values[:, bi]
            np.testing.assert_array_equal(img[present], tiles.image[present, b], err_msg=key)
            np.testing.assert_array_equal(noise[present], tiles.noise[present, b], err_msg=key)
            assert np.isnan(img[~present]).all() and np.isinf(noise[~present]).all()
            for t in np.flatnonzero(present):
                w = wcs_from_header(str(ds.wcs.values[t, bi]))
                dy, dx = tiles.band_offset_px[t, b]
                ra, dec = w.pixel_to_world_values(cx + dx, cx + dy)
                np.testing.assert_allclose([ra, dec], tiles.center_radec[t], atol=1e-9)
    assert views["rubin"].attrs["provenance"]["n_sources"] == 12

    # the difference pipeline's door: one plane by tile id and band
    ts = TileStore(store)
    t = int(np.flatnonzero(tiles.band_present[:, tiles.bands.index("euclid_vis")])[0])
    p = ts.plane(str(tiles.tile_id[t]), "VIS")
    np.testing.assert_array_equal(p.image, tiles.image[t, tiles.bands.index("euclid_vis")])
    assert p.present and p.view == "euclid" and p.wcs.has_celestial
    q = ts.plane(str(tiles.tile_id[t]), "euclid_y")
    assert q.band == "Y" and q.view == "euclid"
    assert ts.plane(str(tiles.tile_id[t]), "y").instrument == "rubin"

    # a second run on a finished store writes nothing
    before = chunk_files(store)
    assert before
    again = ingest_tiles([str(src)], store, chunk_tiles=4, client=dask_client, progress=False)
    assert again.chunks_written == 0 and again.planes_written == 0 and again.new_sources == 0
    assert again.chunks_skipped == rep.chunks_total
    assert chunk_files(store) == before


@pytest.fixture(scope="module")
def fits_tiles(tmp_path_factory):
    """Rubin calexp-like files (40 px, bands g r; one tile-compressed) and Euclid VIS (48 px) / NISP H (24 px)."""
    rng = np.random.default_rng(5)
    d = tmp_path_factory.mktemp("fits")
    _mk(d / "rubin")
    _mk(d / "euclid")
    truth = {}
    for tile in ("T1", "T2"):
        for band in ("g", "r"):
            img, var = _noisy(rng, 40)
            msk = rng.integers(0, 4, (40, 40)).astype(np.int32)
            if (tile, band) == ("T1", "r"):
                img[5, 7] = np.nan
                var[9, 9] = np.inf
            name = f"{tile}_{band}.fits.fz" if (tile, band) == ("T2", "g") else f"{tile}_{band}.fits"
            write_calexp(d / "rubin" / name, img, var, msk, band, compressed=name.endswith(".fz"))
            truth[("rubin", tile, band)] = (img, np.sqrt(var), msk, str(d / "rubin" / name))
        sci, rms = _noisy(rng, 48)
        write_euclid(d / "euclid" / f"EUC_VIS_{tile}.fits", sci, rms, np.zeros((48, 48), np.int32), "VIS",
                     tile=tile, scale=0.1)
        truth[("euclid", tile, "VIS")] = (sci, rms, None, str(d / "euclid" / f"EUC_VIS_{tile}.fits"))
        sci, rms = _noisy(rng, 24)
        flg = rng.integers(0, 2**31 - 1, (24, 24)).astype(np.int32)
        write_euclid(d / "euclid" / f"EUC_NIR_H_{tile}.fits", sci, rms, flg, "H", tile=tile, scale=0.3)
        truth[("euclid", tile, "H")] = (sci, rms, flg, str(d / "euclid" / f"EUC_NIR_H_{tile}.fits"))
    return d, truth


def _mk(p):
    p.mkdir(parents=True, exist_ok=True)
    return p


def test_fits_round_trip_views_split_by_grid(dask_client, fits_tiles, tmp_path):
    src, truth = fits_tiles
    store = str(tmp_path / "fits.zarr")
    rep = ingest_tiles([str(src)], store, chunk_tiles=2, client=dask_client, progress=False)
    assert rep.exit_code == 0, rep.summary()
    views = load_views(store)
    assert sorted(views) == ["euclid_nisp", "euclid_vis", "rubin"]
    assert views["euclid_vis"].sizes["y"] == 48 and views["euclid_nisp"].sizes["y"] == 24
    assert views["rubin"].sizes["x"] == 40
    assert list(views["euclid_nisp"].band.values) == ["Y", "J", "H"]
    assert list(views["rubin"].tile_id.values) == ["T1", "T2"]  # "_r" / "_g" stripped from the file names
    assert rep.n_bad_pixels == 2
    assert views["rubin"].attrs["mask_bits"] == {"BAD": 0, "SAT": 1}
    assert views["rubin"].image.attrs["units"] == "nJy"

    ts = TileStore(store)
    for (inst, tile, band), (img, rms, msk, url) in truth.items():
        p = ts.plane(tile, band, instrument=inst)
        assert p.present and p.source == url
        with fits.open(url) as hdul:
            ref_wcs = WCS(hdul[1].header)
        bad = ~np.isfinite(img) | ~np.isfinite(rms)
        np.testing.assert_array_equal(p.image[~bad], img[~bad])
        np.testing.assert_array_equal(p.noise[~bad], rms.astype(np.float32)[~bad])
        assert (p.image[bad] == 0).all() and np.isinf(p.noise[bad]).all()
        assert p.image.dtype == np.float32 and p.image.dtype.byteorder in "=<"
        if msk is not None:
            np.testing.assert_array_equal(p.mask, msk.astype(np.uint32))
        yx = np.array([[0, 0], [3, 17], [img.shape[0] - 1, img.shape[1] - 2]], float)
        np.testing.assert_allclose(p.wcs.pixel_to_world_values(yx[:, 1], yx[:, 0]),
                                   ref_wcs.pixel_to_world_values(yx[:, 1], yx[:, 0]), rtol=0, atol=1e-10)
    # bands a tile does not have are marked not present
    r = views["rubin"]
    assert r.present.sel(band="g").values.all() and not r.present.sel(band=["u", "i", "z", "y"]).values.any()
    assert not views["euclid_nisp"].present.sel(band=["Y", "J"]).values.any()
    assert np.isnan(r.image.sel(band="u").values).all()


def _bad_inputs(npz_paths, where) -> dict[str, str]:
    """Bad tile files beside good ones; returns {path: reason expected}."""
    where.mkdir()
    good = npz_paths["rubin"][0]
    shutil.copy(good, where / "good.npz")
    out = {}
    data = open(good, "rb").read()
    (where / "truncated.npz").write_bytes(data[: len(data) // 2])
    out["truncated.npz"] = "truncated"
    np.savez(where / "no_rms.npz", image=np.zeros((2, 8, 8), np.float32), band=np.array(["g", "r"]),
             instrument=np.array("rubin"))
    out["no_rms.npz"] = "missing-array"
    np.savez(where / "mismatch.npz", image=np.zeros((2, 8, 8), np.float32), rms=np.ones((2, 8, 9), np.float32),
             band=np.array(["g", "r"]), instrument=np.array("rubin"))
    out["mismatch.npz"] = "shape-mismatch"
    shutil.copy(good, where / "zcopy_of_good.npz")  # sorts after good.npz, so it is the one set aside
    out["zcopy_of_good.npz"] = "duplicate"
    rng = np.random.default_rng(1)
    img, var = _noisy(rng, 16)
    write_calexp(where / "ok_r.fits", img, var, np.zeros((16, 16), np.int32), "r", tile="F1")
    fdata = open(where / "ok_r.fits", "rb").read()
    (where / "trunc_r.fits").write_bytes(fdata[: len(fdata) - 3000])
    out["trunc_r.fits"] = "truncated"
    (where / "garbage_r.fits").write_bytes(b"\x00\xffGARBAGE" * 400 + fdata[3200:])
    out["garbage_r.fits"] = "corrupt"
    with fits.open(where / "ok_r.fits") as hdul:
        fits.HDUList([h.copy() for h in hdul if h.name != "VARIANCE"]).writeto(where / "novar_g.fits")
    out["novar_g.fits"] = "missing-hdu"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.ones(3))])]).writeto(
        where / "table.fits")
    out["table.fits"] = "not-an-image"
    write_calexp(where / "shape_i.fits", img, var[:, :15], np.zeros((16, 16), np.int32), "i", tile="F1")
    out["shape_i.fits"] = "shape-mismatch"
    img2 = img.copy()
    img2[:2, :3] = np.nan
    write_calexp(where / "nan_z.fits", img2, var, np.zeros((16, 16), np.int32), "z", tile="F1")  # kept, 6 bad pixels
    return {str(where / k): v for k, v in out.items()}


def test_bad_inputs_set_aside_rest_goes_on(dask_client, npz_tiles, tmp_path):
    tiles, _src, paths = npz_tiles
    bad = _bad_inputs(paths, tmp_path / "in")
    store = str(tmp_path / "s.zarr")
    rep = ingest_tiles([str(tmp_path / "in")], store, chunk_tiles=2, client=dask_client, progress=False)
    assert rep.exit_code == 3
    reasons = {s["url"]: s["reason"] for s in rep.set_aside}
    assert reasons == bad, rep.summary()
    for s in rep.set_aside:
        assert os.path.basename(s["url"]) in s["message"]
    assert "good.npz" in next(s["message"] for s in rep.set_aside if s["reason"] == "duplicate")
    ts = TileStore(store)
    assert ts.tile_ids == ["F1", str(tiles.tile_id[0])]
    assert ts.plane("F1", "r").present and ts.plane("F1", "z").present and not ts.plane("F1", "g").present
    z = ts.plane("F1", "z")
    assert rep.n_bad_pixels == 6 and (z.image[:2, :3] == 0).all() and np.isinf(z.noise[:2, :3]).all()
    assert np.isfinite(z.noise[2:]).all()
    assert set(Manifest(store).quarantined()["url"]) == set(bad)
    # a re-run writes nothing and still reports what is set aside
    before = chunk_files(store)
    again = ingest_tiles([str(tmp_path / "in")], store, chunk_tiles=2, client=dask_client, progress=False)
    assert again.chunks_written == 0 and again.exit_code == 3 and len(again.set_aside) == len(bad)
    assert chunk_files(store) == before


def test_append_and_resume_equal_one_run(dask_client, npz_tiles, tmp_path):
    tiles, src, paths = npz_tiles
    everything = paths["rubin"] + paths["euclid"]
    one = str(tmp_path / "one.zarr")
    ingest_tiles([str(src)], one, chunk_tiles=4, client=dask_client, progress=False)

    # append: Rubin for the first three tiles, then every file (new tiles, and a new view for old tiles)
    two = str(tmp_path / "two.zarr")
    r1 = ingest_tiles([str(p) for p in paths["rubin"][:3]], two, chunk_tiles=4, client=dask_client, progress=False)
    assert r1.n_tiles == 3 and list(r1.views) == ["rubin"]
    r2 = ingest_tiles([str(p) for p in everything], two, chunk_tiles=4, client=dask_client, progress=False)
    assert r2.exit_code == 0 and r2.new_sources == len(everything) - 3 and r2.n_tiles == 6
    assert r2.chunks_written == r2.chunks_total == 4  # rubin chunk 0 gained tile 3: rewritten from its sources
    assert_tile_stores_equal(one, two)

    # resume: a run that wrote one chunk and was killed; the next run finishes it
    three = str(tmp_path / "three.zarr")
    cfg = TileIngestConfig(sources=[str(src)], store=three, chunk_tiles=4, progress=False)
    plan = plan_tile_ingest(cfg, dask_client)
    total = plan.n_chunks
    plan.todo = plan.todo[:1]
    execute_tile_plan(plan, dask_client)
    rep = run_with_client(cfg, dask_client)
    assert rep.chunks_written == total - 1 and rep.chunks_skipped == 1
    assert_tile_stores_equal(one, three)
    records = glob.glob(three + ".manifest/stages/tiles-*/chunk-*.parquet")
    assert len(records) == total  # every chunk recorded once: nothing written twice


def test_missing_source_and_bad_settings(dask_client, tmp_path):
    rep = ingest_tiles([str(tmp_path / "nothing-*.npz")], str(tmp_path / "s.zarr"), client=dask_client, progress=False)
    assert rep.exit_code == 3 and rep.set_aside[0]["reason"] == "not-found" and rep.n_tiles == 0
    with pytest.raises(ValueError, match="chunk_tiles"):
        TileIngestConfig(sources=["x"], store="y", chunk_tiles=0)
    with pytest.raises(ValueError, match="tile_pattern"):
        TileIngestConfig(sources=["x"], store="y", tile_pattern=r"tile_\d+")


def test_tile_pattern_and_forced_instrument(dask_client, tmp_path):
    rng = np.random.default_rng(3)
    d = _mk(tmp_path / "in")
    for tile in ("a1", "a2"):
        img, var = _noisy(rng, 12)
        np.savez(d / f"field-{tile}-x.npz", image=img, variance=var, band=np.array(["r"]))
    store = str(tmp_path / "s.zarr")
    rep = ingest_tiles([str(d)], store, client=dask_client, progress=False, instrument="rubin",
                       tile_pattern=r"field-(?P<tile>a\d)-")
    assert rep.exit_code == 0, rep.summary()
    ts = TileStore(store)
    assert ts.tile_ids == ["a1", "a2"] and list(ts.specs) == ["rubin"]
    p = ts.plane("a2", "r")
    np.testing.assert_allclose(p.noise, np.sqrt(var), rtol=1e-6)
    np.testing.assert_array_equal(p.image, img)


@pytest.mark.s3
def test_s3_source_and_store_equal_local(dask_client, npz_tiles, s3_options, s3_bucket, s3_endpoint, tmp_path):
    import s3fs

    tiles, _src, paths = npz_tiles
    files = [paths["rubin"][0], paths["rubin"][1]]
    fs = s3fs.S3FileSystem(**s3_options)
    for f in files:
        fs.put(str(f), f"{s3_bucket}/tiles/{f.parent.name}/{f.name}")
    local = str(tmp_path / "local.zarr")
    ingest_tiles([str(f) for f in files], local, chunk_tiles=1, client=dask_client, progress=False)
    store = f"s3://{s3_bucket}/stores/tiles.zarr"
    rep = ingest_tiles([f"s3://{s3_bucket}/tiles"], store, chunk_tiles=1, client=dask_client, progress=False,
                       endpoint_url=s3_endpoint)
    assert rep.exit_code == 0, rep.summary()
    assert_tile_stores_equal(local, store, storage_options_b=s3_options)
    views = open_tile_store(store, s3_options)
    assert all(s.startswith(f"s3://{s3_bucket}/tiles/") for s in views["rubin"].source.values.ravel() if s)
    assert "testing" not in str(views["rubin"].attrs["provenance"]["store_options"])
    p = TileStore(store, s3_options).plane(str(tiles.tile_id[1]), "r")
    assert p.source.startswith("s3://")
    again = ingest_tiles([f"s3://{s3_bucket}/tiles"], store, chunk_tiles=1, client=dask_client, progress=False,
                         endpoint_url=s3_endpoint)
    assert again.chunks_written == 0


@pytest.mark.prefect
def test_cli_command_runs_the_flow(prefect_server, dask_client, npz_tiles, tmp_path):
    """`skybatch run ingest-tiles` as the CLI calls it: flags + a YAML config, the Prefect flow, the exit code.

    (No capsys/capfd here: with a capture fixture, pytest's own stderr capture file ended up closed
    after this in-process flow run, failing the test in pytest's teardown.)
    """
    import argparse

    from skybatch.commands import ingest_tiles as cmd
    from skybatch.commands._config import ConfigError

    _tiles, src, _paths = npz_tiles
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    parser.add_argument("--cluster")
    cmd.add_arguments(parser)
    cfg = tmp_path / "run.yaml"
    cfg.write_text("chunk_tiles: 3\nshard_planes: true\n")
    store = str(tmp_path / "cli.zarr")
    args = parser.parse_args(["--config", str(cfg), "--source", str(src), "--store", store, "--no-progress",
                              "--cluster", dask_client.scheduler.address])
    assert cmd.run(args) == 0
    rubin = open_tile_store(store)["rubin"]
    assert rubin.sizes["tile"] == 6
    assert rubin.image.encoding["shards"] == (3, 6, SIZE, SIZE)
    cfg.write_text("chunk_tile: 3\n")
    with pytest.raises(ConfigError, match="chunk_tiles"):
        cmd.run(parser.parse_args(["--config", str(cfg), "--source", str(src), "--store", store]))
