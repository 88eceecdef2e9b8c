"""Ingest end to end on the session Dask cluster: real FITS files in, a Zarr store out."""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from astropy.io import fits

from skybatch.pipeline.ingest import IngestConfig, ingest, plan_ingest, run_with_client
from skybatch.sources import get_reader
from skybatch.store.fsutil import filesystem
from skybatch.store.manifest import Manifest


def coadds(survey) -> list[str]:
    return sorted(glob.glob(str(survey / "desi" / "**" / "coadd-*.fits"), recursive=True))


def sdss_files(survey) -> list[str]:
    return sorted(glob.glob(str(survey / "sdss" / "**" / "spec-*.fits"), recursive=True))


def assert_stores_equal(a: str, b: str, storage_options_b=None) -> None:
    da = xr.open_zarr(a)
    db = xr.open_zarr(b, storage_options=storage_options_b) if storage_options_b else xr.open_zarr(b)
    assert da.sizes == db.sizes
    for name in list(da.data_vars) + [c for c in da.coords if c != "source"]:
        va, vb = da[name].values, db[name].values
        if va.dtype.kind == "f":
            np.testing.assert_array_equal(va, vb, err_msg=name)
        else:
            assert va.tolist() == vb.tolist(), name


def test_ingest_desi_values_and_contract(dask_client, survey, tmp_path):
    store = str(tmp_path / "desi.zarr")
    files = coadds(survey)
    rep = ingest([str(survey / "desi" / "**" / "coadd-*.fits")], store, chunk_spectra=50, client=dask_client,
                 progress=False)
    assert rep.exit_code == 0, rep.summary()
    ds = xr.open_zarr(store)
    # every science row of every file, once
    fs = filesystem(files[0])
    reader = get_reader("desi")
    infos = [reader.inspect(fs, f) for f in files]
    assert ds.sizes["spectrum"] == sum(i.n_rows for i in infos) == rep.n_spectra
    assert rep.chunks_total == -(-rep.n_spectra // 50)
    assert ds.flux.encoding["chunks"] == (50, 7781)
    # values equal the reader's own output, in planned order
    at = 0
    for info in infos:
        block = reader.read(fs, info, 0, info.n_rows)
        sl = slice(at, at + info.n_rows)
        np.testing.assert_array_equal(ds.flux.values[sl], block.flux)
        np.testing.assert_array_equal(ds.ivar.values[sl], block.ivar)
        np.testing.assert_array_equal(ds.mask.values[sl], block.mask)
        assert ds.targetid.values[sl].tolist() == block.meta["targetid"].tolist()
        assert set(ds.source.values[sl].tolist()) == {info.url}
        at += info.n_rows
    # coordinates joined from redrock agree with the ground truth
    truth = pd.read_parquet(survey / "truth.parquet").set_index("targetid")
    tid = ds.targetid.values
    assert tid.dtype == np.int64 and (tid > 0).all()
    assert set(tid) <= set(truth.index)
    z_true = truth.loc[tid, "z"].to_numpy()
    good = ds.zwarn.values == 0
    assert np.median(np.abs(ds.z.values[good] - z_true[good])) < 0.01
    assert set(np.unique(ds.spectype.values)) <= {"GALAXY", "QSO", "STAR"}
    assert ds.attrs["skybatch_schema"] == "skybatch.spectra"
    assert ds.attrs["provenance"]["n_sources"] == len(files)
    assert ds.attrs["provenance"]["settings"]["chunk_spectra"] == 50
    assert not np.isnan(ds.flux.values).any() and not np.isnan(ds.ivar.values).any()

    # a second run on a finished store does nothing
    mtimes = {p: os.path.getmtime(p) for p in glob.glob(store + "/flux/c/**/*", recursive=True)}
    again = ingest([str(survey / "desi" / "**" / "coadd-*.fits")], store, chunk_spectra=50, client=dask_client,
                   progress=False)
    assert again.chunks_written == 0 and again.spectra_written == 0 and again.new_sources == 0
    assert {p: os.path.getmtime(p) for p in mtimes} == mtimes


def test_append_equals_one_run(dask_client, survey, tmp_path):
    files = coadds(survey)
    one = str(tmp_path / "one.zarr")
    ingest(files, one, chunk_spectra=40, client=dask_client, progress=False)
    two = str(tmp_path / "two.zarr")
    r1 = ingest(files[:1], two, chunk_spectra=40, client=dask_client, progress=False)
    r2 = ingest(files, two, chunk_spectra=40, client=dask_client, progress=False)
    assert r2.new_sources == len(files) - 1
    assert r2.spectra_written < r2.n_spectra  # earlier chunks were not rewritten...
    assert r2.spectra_written >= r2.n_spectra - r1.n_spectra  # ...but every new row was
    assert_stores_equal(one, two)


def test_sdss_store_and_grid_mismatch(dask_client, survey, tmp_path):
    store = str(tmp_path / "sdss.zarr")
    files = sdss_files(survey)
    rep = ingest(files, store, chunk_spectra=8, client=dask_client, progress=False)
    assert rep.exit_code == 0, rep.summary()
    ds = xr.open_zarr(store)
    assert ds.sizes["spectrum"] == len(files)
    assert ds.attrs["grid"]["kind"] == "loglam"
    # a DESI file does not fit an SDSS store: set aside, named, nothing else disturbed
    rep2 = ingest(coadds(survey)[:1], store, client=dask_client, progress=False)
    assert rep2.exit_code == 3
    (s,) = rep2.set_aside
    assert s["reason"] == "grid-mismatch" and coadds(survey)[0] in s["message"]
    assert xr.open_zarr(store).sizes["spectrum"] == len(files)


def _bad_copies(survey, where) -> dict[str, str]:
    """Bad inputs beside good ones; returns {reason expected: path}."""
    where.mkdir()
    src = coadds(survey)[0]
    out = {}
    good = where / "coadd-main-dark-1.fits"
    shutil.copy(src, good)
    shutil.copy(src.replace("coadd-", "redrock-"), where / "redrock-main-dark-1.fits")
    # truncated: cut the file in the middle of the image data
    trunc = where / "coadd-main-dark-2.fits"
    data = open(src, "rb").read()
    trunc.write_bytes(data[: len(data) // 2])
    out["truncated"] = str(trunc)
    # corrupt: a header card of the FIBERMAP extension overwritten with garbage
    corrupt = where / "coadd-main-dark-3.fits"
    at = data.index(b"NAXIS2  =", data.index(b"XTENSION= 'BINTABLE'"))
    corrupt.write_bytes(data[:at] + b"NAXIS2  = \x00\xff garbage \x01" + data[at + 30 :])
    out["corrupt"] = str(corrupt)
    # not FITS at all, though named like a coadd: garbage over the primary header
    garbage = where / "coadd-main-dark-6.fits"
    garbage.write_bytes(b"\x00\xffGARBAGE" * 400 + data[3200:])
    out["not-fits"] = str(garbage)
    # missing HDU: no R_FLUX
    with fits.open(src) as hdul:
        kept = fits.HDUList([h.copy() for h in hdul if h.name != "R_FLUX"])
        kept.writeto(where / "coadd-main-dark-4.fits")
    out["missing-hdu"] = str(where / "coadd-main-dark-4.fits")
    # not spectra: a plain image
    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(where / "image.fits")
    out["unknown-format"] = str(where / "image.fits")
    # NaN / inf pixels: ingested, repaired, counted
    nanfile = where / "coadd-main-dark-5.fits"
    with fits.open(src) as hdul:
        hdul["B_FLUX"].data[0, 100:110] = np.nan
        hdul["R_IVAR"].data[1, 5] = np.inf
        hdul.writeto(nanfile, checksum=True)  # a valid file with NaN pixels (its checksums updated)
    shutil.copy(src.replace("coadd-", "redrock-"), where / "redrock-main-dark-5.fits")
    return out


def test_bad_inputs_set_aside_rest_goes_on(dask_client, survey, tmp_path):
    bad = _bad_copies(survey, tmp_path / "in")
    store = str(tmp_path / "s.zarr")
    rep = ingest([str(tmp_path / "in")], store, chunk_spectra=32, client=dask_client, progress=False)
    assert rep.exit_code == 3
    reasons = {s["url"]: s["reason"] for s in rep.set_aside}
    assert set(reasons) == set(bad.values()), rep.summary()
    for reason, path in bad.items():
        expected = {"corrupt", "unknown-format"} if reason == "not-fits" else {reason}
        assert reasons[path] in expected, (path, reasons[path])
        msg = next(s["message"] for s in rep.set_aside if s["url"] == path)
        assert os.path.basename(path) in msg
    ds = xr.open_zarr(store)
    n_good = get_reader("desi").inspect(filesystem(store), coadds(survey)[0]).n_rows
    assert ds.sizes["spectrum"] == 2 * n_good  # the good file and the repaired NaN file
    assert rep.n_bad_pixels >= 11
    assert np.isfinite(ds.flux.values).all() and np.isfinite(ds.ivar.values).all()
    q = Manifest(store).quarantined()
    assert set(q["url"]) == set(bad.values())
    # a re-run writes nothing and still reports what is set aside
    again = ingest([str(tmp_path / "in")], store, chunk_spectra=32, client=dask_client, progress=False)
    assert again.chunks_written == 0 and again.exit_code == 3 and len(again.set_aside) == len(bad)


def test_missing_source_and_bad_settings(dask_client, tmp_path):
    rep = ingest([str(tmp_path / "nothing-here-*.fits")], str(tmp_path / "s.zarr"), client=dask_client, progress=False)
    assert rep.exit_code == 3 and rep.set_aside[0]["reason"] == "not-found"
    with pytest.raises(ValueError, match="chunk_spectra"):
        IngestConfig(sources=["x"], store="y", chunk_spectra=0)
    with pytest.raises(ValueError, match="format"):
        IngestConfig(sources=["x"], store="y", format="fits")


def test_plan_assigns_whole_chunks(dask_client, survey, tmp_path):
    cfg = IngestConfig(sources=coadds(survey), store=str(tmp_path / "p.zarr"), chunk_spectra=37, progress=False)
    plan = plan_ingest(cfg, dask_client)
    starts = [t.start for t in plan.todo]
    assert starts == list(range(0, plan.n_spectra, 37))
    assert all(t.stop - t.start == 37 for t in plan.todo[:-1])
    covered = sum(b - a for t in plan.todo for _, a, b in t.pieces)
    assert covered == plan.n_spectra
    rep = run_with_client(cfg, dask_client)
    assert rep.chunks_written == len(plan.todo)


def test_deleted_store_with_stale_manifest_starts_over(dask_client, survey, tmp_path):
    store = str(tmp_path / "s.zarr")
    first = ingest(coadds(survey)[:1], store, chunk_spectra=50, client=dask_client, progress=False)
    shutil.rmtree(store)
    again = ingest(coadds(survey)[:1], store, chunk_spectra=50, client=dask_client, progress=False)
    assert again.chunks_written == first.chunks_written and again.spectra_written == first.n_spectra
    ds = xr.open_zarr(store)
    assert (ds.targetid.values > 0).all() and (ds.ivar.values.max(axis=1) > 0).all()


def test_store_killed_between_arrays_and_attrs_is_completed_by_rerun(dask_client, survey, tmp_path):
    """kill -9 between array creation and the attrs write: the re-run completes creation; same store."""
    import subprocess
    import sys

    from tests.store.test_spectra_store import _KILL_AT_ATTRS

    files = coadds(survey)[:2]
    ref = str(tmp_path / "ref.zarr")
    assert ingest(files, ref, chunk_spectra=50, client=dask_client, progress=False).exit_code == 0
    store = str(tmp_path / "killed.zarr")
    code = _KILL_AT_ATTRS.replace('Grid("linear", 3600.0, 0.8, 64, "test"), 4,',
                                  'Grid("linear", 3600.0, 0.8, 7781, "desi-brz"), 50,')
    proc = subprocess.run([sys.executable, "-c", code, store], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    rep = ingest(files, store, chunk_spectra=50, client=dask_client, progress=False)
    assert rep.exit_code == 0, rep.summary()
    assert_stores_equal(ref, store)


def test_store_of_ours_with_incomplete_creation_attrs_says_what_to_do(dask_client, survey, tmp_path):
    """A store with its identity but no per_spectrum_columns (an older creation cut short): refused, with the fix."""
    from skybatch.store.identity import JobRefused
    from skybatch.store.spectra_store import open_group

    files = coadds(survey)[:1]
    store = str(tmp_path / "s.zarr")
    assert ingest(files, store, chunk_spectra=50, client=dask_client, progress=False).exit_code == 0
    g = open_group(store)
    attrs = dict(g.attrs)
    attrs.pop("per_spectrum_columns")
    g.attrs.put(attrs)
    from skybatch.store.spectra_store import consolidate

    consolidate(store)
    with pytest.raises(JobRefused, match=r"lack \['per_spectrum_columns'\].*mv "):
        ingest(files, store, chunk_spectra=50, client=dask_client, progress=False)


def test_sharded_store_same_values_as_unsharded_through_preprocess(dask_client, survey, tmp_path, monkeypatch):
    """chunk_spectra 64 with 1 MiB inner chunks: shards of 64 spectra, 32-spectrum chunks; every value as unsharded."""
    from skybatch.pipeline.preprocess import preprocess
    from skybatch.store.spectra_store import open_group

    files = coadds(survey)
    plain = str(tmp_path / "plain.zarr")
    monkeypatch.setenv("SKYBATCH_CHUNK_BYTES", str(2**30))
    assert ingest(files, plain, chunk_spectra=64, client=dask_client, progress=False).exit_code == 0
    assert open_group(plain, mode="r")["flux"].shards is None
    sharded = str(tmp_path / "sharded.zarr")
    monkeypatch.setenv("SKYBATCH_CHUNK_BYTES", str(2**20))
    assert ingest(files, sharded, chunk_spectra=64, client=dask_client, progress=False).exit_code == 0
    g = open_group(sharded, mode="r")
    assert g["flux"].shards == (64, 7781) and g["flux"].chunks == (32, 7781)
    assert g.attrs["shard_spectra"] == 64 and g.attrs["inner_chunk_spectra"] == 32
    assert_stores_equal(plain, sharded)
    monkeypatch.delenv("SKYBATCH_CHUNK_BYTES")
    outs = []
    for s in (plain, sharded):
        out = s.replace(".zarr", "-pp.zarr")
        assert preprocess(s, out, client=dask_client, progress=False).exit_code == 0
        outs.append(out)
    assert_stores_equal(*outs)
