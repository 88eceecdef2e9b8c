"""Verified inputs and sorted errors: DATASUM flips, duplicate files and targets, failures in a chunk."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

from skybatch.pipeline.ingest import SET_ASIDE_MASK_BIT, IngestConfig, execute_plan, ingest, plan_ingest
from skybatch.sample.corrupt import hdu_offsets

from ._util import make_survey


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("in-survey"), n_healpix=3, per_file=20, seed=11)


def _copy_pair(src: str, dst_dir, name: str) -> str:
    dst = dst_dir / f"coadd-{name}.fits"
    shutil.copy(src, dst)
    shutil.copy(src.replace("coadd-", "redrock-"), dst_dir / f"redrock-{name}.fits")
    return str(dst)


def test_byte_flips_under_datasum_set_aside(dask_client, survey, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    good = _copy_pair(survey[0], d, "main-dark-1")
    bad = _copy_pair(survey[1], d, "main-dark-2")
    _h, off, size = hdu_offsets(bad)["B_FLUX"]
    raw = bytearray(open(bad, "rb").read())
    for k in range(0, 400, 4):  # exponent bytes of 100 float32 values: values up to ~1e20
        raw[off + size // 3 + k] ^= 0x30
    open(bad, "wb").write(bytes(raw))
    rep = ingest([str(d)], str(tmp_path / "s.zarr"), chunk_spectra=16, client=dask_client, progress=False)
    print(rep.summary())
    assert rep.exit_code == 3
    assert [(s["url"], s["reason"]) for s in rep.set_aside] == [(bad, "checksum")]
    assert "B_FLUX" in rep.set_aside[0]["message"] and "DATASUM" in rep.set_aside[0]["message"]
    ds = xr.open_zarr(str(tmp_path / "s.zarr"))
    # found while reading the flux (DATASUM checked on the bytes read, no extra pass when planning):
    # the bad file's rows hold no data and are flagged, the good file's rows are written
    src = ds.source.values
    bad_rows = src == bad
    assert set(src.tolist()) == {good, bad} and bad_rows.any()
    assert (ds.targetid.values[bad_rows] == -1).all() and (ds.ivar.values[bad_rows] == 0).all()
    assert (ds.mask.values[bad_rows] & np.uint32(1 << SET_ASIDE_MASK_BIT)).all()
    assert (ds.targetid.values[~bad_rows] > 0).all()
    assert float(np.abs(ds.flux.values).max()) < 1e6
    again = ingest([str(d)], str(tmp_path / "s.zarr"), chunk_spectra=16, client=dask_client, progress=False)
    assert again.exit_code == 3 and [s["reason"] for s in again.set_aside] == ["checksum"]


def test_checksums_verified_on_the_bytes_read_not_in_a_pass_when_planning(dask_client, survey, tmp_path):
    """A flipped byte in RESOLUTION (never read) is not a reason to set a file aside; FIBERMAP is checked when planning."""
    d = tmp_path / "in"
    d.mkdir()
    res = _copy_pair(survey[0], d, "main-dark-1")
    fm = _copy_pair(survey[1], d, "main-dark-2")
    for path, hdu in ((res, "B_RESOLUTION"), (fm, "FIBERMAP")):
        _h, off, size = hdu_offsets(path)[hdu]
        raw = bytearray(open(path, "rb").read())
        raw[off + size // 2] ^= 0x01
        open(path, "wb").write(bytes(raw))
    cfg = IngestConfig(sources=[str(d)], store=str(tmp_path / "s.zarr"), chunk_spectra=16, progress=False)
    plan = plan_ingest(cfg, dask_client)
    assert [(s["url"], s["reason"]) for s in plan.set_aside] == [(fm, "checksum")]
    assert "FIBERMAP" in plan.set_aside[0]["message"]
    rep = execute_plan(plan, dask_client)
    assert rep.exit_code == 3 and [s["url"] for s in rep.set_aside] == [fm]
    ds = xr.open_zarr(str(tmp_path / "s.zarr"))
    assert set(ds.source.values.tolist()) == {res} and (ds.targetid.values > 0).all()


def test_duplicate_files_read_once_and_duplicate_targets_reported(dask_client, survey, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    a = _copy_pair(survey[0], d, "main-dark-1")
    twin = _copy_pair(survey[0], d, "main-dark-1-copy")  # the same bytes under another name
    # the same targets in a different file (one pixel changed, checksums rewritten): reported, not dropped
    other = str(d / "coadd-main-dark-9.fits")
    with fits.open(survey[0]) as h:
        h["B_FLUX"].data[0, 0] += 1.0
        h.writeto(other, checksum=True)
    shutil.copy(survey[0].replace("coadd-", "redrock-"), d / "redrock-main-dark-9.fits")
    rep = ingest([str(d)], str(tmp_path / "s.zarr"), chunk_spectra=16, client=dask_client, progress=False)
    print(rep.summary())
    kept, dup = sorted([a, twin])  # the first name is read, the other set aside
    reasons = {s["url"]: s["reason"] for s in rep.set_aside}
    assert reasons == {dup: "duplicate"} and kept in rep.set_aside[0]["message"]
    ds = xr.open_zarr(str(tmp_path / "s.zarr"))
    assert set(ds.source.values.tolist()) == {kept, other}
    n = ds.sizes["spectrum"] // 2
    assert rep.duplicate_targets == 2 * n and "TARGETID" in rep.duplicate_examples[0]
    assert "WARNING" in rep.summary()


def test_decode_failure_in_chunk_sets_file_aside_rest_written(dask_client, survey, tmp_path):
    """A file that breaks after planning: its rows are left out (flagged), the chunk's other rows are written."""
    d = tmp_path / "in"
    d.mkdir()
    files = [_copy_pair(f, d, f"main-dark-{i}") for i, f in enumerate(survey)]
    store = str(tmp_path / "s.zarr")
    cfg = IngestConfig(sources=[str(d)], store=store, chunk_spectra=32, progress=False)
    plan = plan_ingest(cfg, dask_client)
    victim = files[1]
    data = open(victim, "rb").read()
    open(victim, "wb").write(data[: len(data) // 3])  # truncated after planning
    rep = execute_plan(plan, dask_client)
    print(rep.summary())
    assert rep.exit_code == 3 and not rep.failed_chunks
    assert [s["url"] for s in rep.set_aside] == [victim]
    ds = xr.open_zarr(store)
    src = ds.source.values
    bad = src == victim
    assert bad.any() and (~bad).any()
    assert (ds.targetid.values[bad] == -1).all() and (ds.ivar.values[bad] == 0).all()
    assert (ds.mask.values[bad] & (1 << SET_ASIDE_MASK_BIT)).all()
    assert (ds.targetid.values[~bad] > 0).all() and (ds.ivar.values[~bad].max(axis=1) > 0).all()
    # restore the file: the next run writes its rows (the partial chunks were not recorded as done)
    open(victim, "wb").write(data)
    again = ingest([str(d)], store, chunk_spectra=32, client=dask_client, progress=False)
    print(again.summary())
    assert again.exit_code == 0 and again.chunks_written >= 1
    assert (xr.open_zarr(store).targetid.values > 0).all()


def test_unexpected_error_fails_chunk_loudly(survey, tmp_path, capfd):
    """A reader bug (TypeError) is not 'corrupt input': the chunk fails, traceback once, exit status 1."""
    from distributed import Client, LocalCluster

    from skybatch.sources.desi import DesiCoaddReader

    store = str(tmp_path / "s.zarr")
    orig = DesiCoaddReader.read_into

    def buggy(self, fs, info, start, stop, flux, ivar, mask):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    with LocalCluster(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as cl, \
            Client(cl) as client:
        DesiCoaddReader.read_into = buggy
        try:
            rep = ingest(survey, store, chunk_spectra=16, client=client, progress=False, retries=0)
        finally:
            DesiCoaddReader.read_into = orig
    err = capfd.readouterr().err
    print(rep.summary())
    assert rep.exit_code == 1 and rep.failed_chunks and not rep.set_aside
    assert all("TypeError" in c["error"] for c in rep.failed_chunks)
    assert err.count("Traceback") == 1 and "buggy" in err


def test_duplicates_without_fits_checksums_are_hashed_on_the_workers(dask_client, survey, tmp_path):
    """Files without CHECKSUM/DATASUM: same-size candidates are hashed (on the cluster); twins set aside once."""
    d = tmp_path / "in"
    d.mkdir()
    plain = str(d / "coadd-main-dark-1.fits")
    with fits.open(survey[0]) as h:
        for hdu in h:
            for k in ("CHECKSUM", "DATASUM"):
                hdu.header.remove(k, ignore_missing=True)
        h.writeto(plain, checksum=False)
    with fits.open(plain) as h:
        assert all("DATASUM" not in hdu.header for hdu in h)
    shutil.copy(survey[0].replace("coadd-", "redrock-"), d / "redrock-main-dark-1.fits")
    twin = _copy_pair(plain, d, "main-dark-1-copy")
    rep = ingest([str(d)], str(tmp_path / "s.zarr"), chunk_spectra=16, client=dask_client, progress=False)
    kept, dup = sorted([plain, twin])  # the first name is read
    assert {s["url"]: s["reason"] for s in rep.set_aside} == {dup: "duplicate"}
    assert set(xr.open_zarr(str(tmp_path / "s.zarr")).source.values.tolist()) == {kept}
