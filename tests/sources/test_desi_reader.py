"""DESI coadd reader on real FITS files written by the sample generator."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from skybatch.sample import corrupt
from skybatch.sample.desi_files import write_desi_coadd
from skybatch.sources import META_COLUMNS, SourceError, get_reader
from skybatch.sources.desi import SPECMASK_NODATA_BIT

from .conftest import HEALPIX, CountingFS

ARM_OFF = {"B": 0, "R": 2700, "Z": 4900}
ARM_N = {"B": 2751, "R": 2326, "Z": 2881}
NODATA = np.uint32(1 << SPECMASK_NODATA_BIT)


def read_all(fs, path, keep_nonscience=False):
    r = get_reader("desi")
    info = r.inspect(fs, str(path), keep_nonscience=keep_nonscience)
    return info, r.read(fs, info, 0, info.n_rows)


def copy_pair(pair, dst_dir: Path, with_redrock: bool = True) -> tuple[Path, Path]:
    dst_dir.mkdir(parents=True, exist_ok=True)
    c = dst_dir / Path(pair.coadd).name
    r = dst_dir / Path(pair.redrock).name
    shutil.copyfile(pair.coadd, c)
    if with_redrock:
        shutil.copyfile(pair.redrock, r)
    return c, r


# ----------------------------------------------------------------------------- values
def test_arms_copied_where_alone_and_ivar_weighted_in_overlaps(fs, desi_pair):
    info, blk = read_all(fs, desi_pair.coadd)
    rows = info.rows
    raw = desi_pair.raw
    f = {a: raw[f"{a}_FLUX"][rows].astype(np.float32) for a in "BRZ"}
    iv = {a: raw[f"{a}_IVAR"][rows].astype(np.float32) for a in "BRZ"}
    m = {a: raw[f"{a}_MASK"][rows].astype(np.int64).astype(np.uint32) for a in "BRZ"}
    assert blk.flux.shape == (info.n_rows, 7781) and blk.flux.dtype == np.float32 and blk.mask.dtype == np.uint32
    # pixels covered by one arm: an exact copy (mask cleared where ivar > 0, desispec's rule)
    for a, (lo, hi) in {"B": (0, 2700), "R": (2751, 4900), "Z": (5026, 7781)}.items():
        sl = slice(lo - ARM_OFF[a], hi - ARM_OFF[a])
        np.testing.assert_array_equal(blk.flux[:, lo:hi], f[a][:, sl])
        np.testing.assert_array_equal(blk.ivar[:, lo:hi], iv[a][:, sl])
        np.testing.assert_array_equal(blk.mask[:, lo:hi], np.where(iv[a][:, sl] > 0, 0, m[a][:, sl]))
    # overlaps: inverse-variance weighted mean, summed ivar, OR-ed mask where ivar == 0
    for a1, a2, lo, hi in (("B", "R", 2700, 2751), ("R", "Z", 4900, 5026)):
        s1, s2 = slice(lo - ARM_OFF[a1], hi - ARM_OFF[a1]), slice(lo - ARM_OFF[a2], hi - ARM_OFF[a2])
        w1, w2 = iv[a1][:, s1].astype(np.float64), iv[a2][:, s2].astype(np.float64)
        wsum = w1 + w2
        want = (w1 * f[a1][:, s1] + w2 * f[a2][:, s2]) / np.where(wsum > 0, wsum, 1.0)
        np.testing.assert_allclose(blk.flux[:, lo:hi], want.astype(np.float32), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(blk.ivar[:, lo:hi], wsum.astype(np.float32))
        np.testing.assert_array_equal(blk.mask[:, lo:hi], np.where(wsum > 0, 0, m[a1][:, s1] | m[a2][:, s2]))
        # the weighted mean really differs from either arm alone (the test can fail)
        assert not np.allclose(blk.flux[:, lo:hi], f[a1][:, s1])
    # masked pixels from the generator survive where no arm has data
    assert (blk.mask != 0).any() and np.all(blk.ivar[blk.mask != 0] == 0)


def test_equals_desispec_coadd_cameras(fs, desi_pair):
    pytest.importorskip("desispec", reason="desispec (test-only reference) is not installed")
    from desispec.coaddition import coadd_cameras
    from desispec.io import read_spectra

    spec = read_spectra(desi_pair.coadd, skip_hdus={"RESOLUTION", "EXP_FIBERMAP", "SCORES"})
    ref = coadd_cameras(spec)
    info, blk = read_all(fs, desi_pair.coadd, keep_nonscience=True)
    assert np.array_equal(ref.wave["brz"], get_reader("desi").grid.wavelength()) or np.allclose(
        ref.wave["brz"], get_reader("desi").grid.wavelength(), atol=1e-6)
    np.testing.assert_array_equal(blk.flux, ref.flux["brz"].astype(np.float32))
    np.testing.assert_array_equal(blk.ivar, ref.ivar["brz"].astype(np.float32))
    np.testing.assert_array_equal(blk.mask, ref.mask["brz"].astype(np.int64).astype(np.uint32))
    assert blk.meta["targetid"].tolist() == list(spec.fibermap["TARGETID"])


def test_meta_targetid_redshifts_and_dtypes(fs, desi_pair):
    info, blk = read_all(fs, desi_pair.coadd)
    t = desi_pair.files.truth
    np.testing.assert_array_equal(info.rows, t["source_row"])
    assert blk.meta["targetid"].dtype == np.int64
    assert (blk.meta["targetid"] > 2**53).all()  # exact int64, never through float
    assert blk.meta["targetid"].tolist() == t["targetid"].tolist()
    np.testing.assert_array_equal(blk.meta["z"], t["z"])
    assert blk.meta["spectype"].tolist() == t["spectype"].tolist()
    np.testing.assert_array_equal(blk.meta["zwarn"], t["zwarn"])
    np.testing.assert_array_equal(blk.meta["ra"], t["ra"])
    np.testing.assert_array_equal(blk.meta["source_row"], t["source_row"])
    assert set(blk.meta["healpix"].tolist()) == {HEALPIX}
    assert set(blk.meta["survey"]) == {"main"} and set(blk.meta["program"]) == {"dark"}
    assert set(blk.meta["objtype"]) == {"TGT"}
    for name, dt in {**META_COLUMNS, **info.extra_columns}.items():
        col = blk.meta[name]
        assert col.shape == (info.n_rows,) and col.dtype == np.dtype(dt), name
        assert col.dtype.byteorder in ("=", "|", "<" if np.little_endian else ">"), name
    for a in (blk.flux, blk.ivar, blk.mask):
        assert a.dtype.isnative


def test_nonscience_rows_dropped_unless_kept(fs, desi_pair):
    info, blk = read_all(fs, desi_pair.coadd)
    info_all, blk_all = read_all(fs, desi_pair.coadd, keep_nonscience=True)
    n_total = len(desi_pair.files.targetid)
    assert info.n_rows == 24 and info_all.n_rows == n_total == 27
    np.testing.assert_array_equal(info_all.rows, np.arange(n_total))
    non = desi_pair.files.nonscience_rows
    assert not set(non.tolist()) & set(info.rows.tolist())
    objtype = blk_all.meta["objtype"]
    tid = blk_all.meta["targetid"]
    sky = objtype == "SKY"
    assert sky.sum() == 2 and np.all((tid[sky] >> 59) & 1 == 1)
    assert np.all(blk_all.meta["zwarn"][sky] & 1)  # redrock SKY bit
    unassigned = objtype == "NON"
    assert unassigned.sum() == 1 and np.all(tid[unassigned] < 0)
    assert np.all(blk_all.flux[unassigned] == 0) and np.all(blk_all.ivar[unassigned] == 0)
    # the science rows of the full read are the same spectra
    keep = np.isin(info_all.rows, info.rows)
    np.testing.assert_array_equal(blk_all.flux[keep], blk.flux)


def test_redshifts_joined_by_targetid_when_row_order_differs(fs, desi_edr_shuffled):
    rr_tid = fits.getdata(desi_edr_shuffled.redrock, "REDSHIFTS")["TARGETID"]
    fm_tid = fits.getdata(desi_edr_shuffled.coadd, "FIBERMAP")["TARGETID"]
    assert sorted(rr_tid) == sorted(fm_tid) and list(rr_tid) != list(fm_tid)
    info, blk = read_all(fs, desi_edr_shuffled.coadd)
    t = desi_edr_shuffled.files.truth
    assert blk.meta["targetid"].tolist() == t["targetid"].tolist()
    np.testing.assert_array_equal(blk.meta["z"], t["z"])
    assert blk.meta["spectype"].tolist() == t["spectype"].tolist()
    np.testing.assert_array_equal(blk.meta["deltachi2"], t["deltachi2"])
    assert set(blk.meta["survey"]) == {"sv3"} and set(blk.meta["program"]) == {"bright"}


def test_edr_uint32_masks(fs, desi_edr_shuffled):
    hdr = fits.getheader(desi_edr_shuffled.coadd, "B_MASK")
    assert hdr["BITPIX"] == 32 and hdr["BZERO"] == 2**31
    info, blk = read_all(fs, desi_edr_shuffled.coadd)
    raw = desi_edr_shuffled.raw["B_MASK"][info.rows]
    assert raw.dtype == np.uint32
    ivar = desi_edr_shuffled.raw["B_IVAR"][info.rows]
    np.testing.assert_array_equal(blk.mask[:, :2700], np.where(ivar[:, :2700] > 0, 0, raw[:, :2700]))
    assert (blk.mask[:, :2700] != 0).any()


@pytest.mark.parametrize("mask_dtype", ["int32", "uint32"])
def test_high_mask_bits_read_the_same_from_int32_and_uint32(fs, desi_small, tmp_path, mask_dtype):
    """Bit 31 survives both encodings: iron int32 (negative values) and EDR uint32 (BZERO)."""
    path = tmp_path / f"coadd-main-dark-{HEALPIX}.fits"
    raw = desi_small.raw
    masks, flux, ivar = {}, {}, {}
    for a in "brz":
        A = a.upper()
        iv = raw[f"{A}_IVAR"].astype(np.float32)
        m = raw[f"{A}_MASK"].astype(np.int64).astype(np.uint32)
        m[iv == 0] |= np.uint32(1 << 31) | np.uint32(1 << 20)
        masks[a], flux[a], ivar[a] = m, raw[f"{A}_FLUX"].astype(np.float32), iv
    write_desi_coadd(
        path, healpix=HEALPIX, survey="main", program="dark", fibermap=fits.getdata(desi_small.coadd, "FIBERMAP"),
        exp_fibermap=fits.getdata(desi_small.coadd, "EXP_FIBERMAP"), scores=fits.getdata(desi_small.coadd, "SCORES"),
        flux=flux, ivar=ivar, mask=masks, mask_dtype=mask_dtype,
    )
    assert fits.getheader(path, "B_MASK").get("BZERO", 0) == (2**31 if mask_dtype == "uint32" else 0)
    info, blk = read_all(fs, path, keep_nonscience=True)
    dead = blk.ivar == 0
    assert dead.any()
    assert np.all(blk.mask[dead] & np.uint32(1 << 31)) and np.all(blk.mask[dead] & np.uint32(1 << 20))
    np.testing.assert_array_equal(blk.mask[:, :2700], np.where(ivar["b"][:, :2700] > 0, 0, masks["b"][:, :2700]))


def test_missing_redrock_gives_missing_redshifts(fs, desi_pair, tmp_path):
    c, _ = copy_pair(desi_pair, tmp_path / "alone", with_redrock=False)
    info, blk = read_all(fs, c)
    assert info.n_rows == 24
    assert np.all(np.isnan(blk.meta["z"])) and np.all(blk.meta["zwarn"] == -1)
    assert set(blk.meta["spectype"]) == {""}
    assert blk.meta["targetid"].tolist() == desi_pair.files.truth["targetid"].tolist()


def test_read_subrange_matches_full_read(fs, desi_pair):
    r = get_reader("desi")
    info = r.inspect(fs, desi_pair.coadd)
    full = r.read(fs, info, 0, info.n_rows)
    part = r.read(fs, info, 5, 11)
    np.testing.assert_array_equal(part.flux, full.flux[5:11])
    np.testing.assert_array_equal(part.mask, full.mask[5:11])
    assert part.meta["targetid"].tolist() == full.meta["targetid"][5:11].tolist()
    empty = r.read(fs, info, 3, 3)
    assert len(empty) == 0 and empty.flux.shape == (0, 7781)


def test_nonfinite_pixels_zeroed_and_counted(fs, desi_small, tmp_path):
    c, r = copy_pair(desi_small, tmp_path / "nan")
    row = int(desi_small.files.science_rows[2])
    tmp = tmp_path / "tmp.fits"
    corrupt.inject_nonfinite(c, tmp, hdu="B_FLUX", pixels=[(row, 100)], value=np.nan)
    corrupt.inject_nonfinite(tmp, c, hdu="R_IVAR", pixels=[(row, 10)], value=np.inf)  # overlap pixel 2710
    corrupt.inject_nonfinite(c, tmp, hdu="Z_FLUX", pixels=[(row, 2000)], value=-np.inf)  # brz 6900
    shutil.copyfile(tmp, c)
    info, blk = read_all(fs, c)
    assert blk.n_bad_pixels == 3
    i = int(np.flatnonzero(info.rows == row)[0])
    for px in (100, 6900):
        assert blk.flux[i, px] == 0 and blk.ivar[i, px] == 0 and blk.mask[i, px] & NODATA
    # in the b/r overlap the good b pixel carries the result
    raw = desi_small.raw
    assert blk.flux[i, 2710] == raw["B_FLUX"][row, 2710] and blk.ivar[i, 2710] == raw["B_IVAR"][row, 2710]
    assert np.isfinite(blk.flux).all() and np.isfinite(blk.ivar).all()


# ----------------------------------------------------------------------------- bytes read
def test_inspect_reads_no_pixels_and_read_only_the_rows(fs, desi_pair):
    cfs = CountingFS(fs)
    r = get_reader("desi")
    offsets = corrupt.hdu_offsets(desi_pair.coadd)
    size = Path(desi_pair.coadd).stat().st_size
    pixel_hdus = [n for n in offsets if n.split("_")[-1] in ("FLUX", "IVAR", "MASK", "RESOLUTION")]
    assert len(pixel_hdus) == 12
    info = r.inspect(cfs, desi_pair.coadd)
    for name in pixel_hdus:
        _, d0, nb = offsets[name]
        assert cfs.touched(desi_pair.coadd, d0, d0 + nb) == 0, f"inspect read data of {name}"
    assert cfs.bytes_read(desi_pair.coadd) < 0.02 * size
    cfs.reads.clear()
    blk = r.read(cfs, info, 7, 9)  # two spectra
    assert len(blk) == 2
    for name in pixel_hdus:
        _, d0, nb = offsets[name]
        got = cfs.touched(desi_pair.coadd, d0, d0 + nb)
        if name.endswith("RESOLUTION"):
            assert got == 0, "RESOLUTION must never be read"
        else:
            per_row = nb // 27
            rows = info.rows[7:9]
            assert 2 * per_row <= got <= (rows[-1] - rows[0] + 1) * per_row, name
    assert cfs.bytes_read(desi_pair.coadd) < 0.05 * size


# ----------------------------------------------------------------------------- bad input
def _expect(fs, path, reason, *, reader="desi", detail=None):
    with pytest.raises(SourceError) as ei:
        get_reader(reader).inspect(fs, str(path))
    e = ei.value
    assert e.reason == reason, str(e)
    assert Path(path).name in str(e)
    if detail:
        assert detail in str(e)
    return e


def test_truncated_files(fs, desi_small, tmp_path):
    _expect(fs, corrupt.truncate(desi_small.coadd, tmp_path / "coadd-t1.fits", keep_fraction=0.6), "truncated", detail="re-download")
    _expect(fs, corrupt.truncate(desi_small.coadd, tmp_path / "coadd-t2.fits", keep_bytes=1500), "truncated")
    # just a few bytes short: the last HDU's declared data do not fit
    size = Path(desi_small.coadd).stat().st_size
    _, d0, nb = corrupt.hdu_offsets(desi_small.coadd)["SCORES"]
    _expect(fs, corrupt.truncate(desi_small.coadd, tmp_path / "coadd-t3.fits", keep_bytes=d0 + nb - 10), "truncated", detail="SCORES")
    assert d0 + nb - 10 < size


def test_corrupt_headers(fs, desi_small, tmp_path):
    _expect(fs, corrupt.garble_header(desi_small.coadd, tmp_path / "coadd-g1.fits", hdu="FIBERMAP"), "corrupt", detail="HDU 1")
    _expect(fs, corrupt.garble_header(desi_small.coadd, tmp_path / "coadd-g2.fits", hdu="R_IVAR"), "corrupt")


@pytest.mark.parametrize("hdu", ["FIBERMAP", "B_FLUX", "R_MASK", "Z_WAVELENGTH"])
def test_missing_hdus(fs, desi_small, tmp_path, hdu):
    _expect(fs, corrupt.drop_hdu(desi_small.coadd, tmp_path / f"coadd-{hdu}.fits", hdu), "missing-hdu", detail=hdu)


def test_row_mismatch(fs, desi_small, tmp_path):
    _expect(fs, corrupt.drop_table_rows(desi_small.coadd, tmp_path / "coadd-rows.fits", hdu="FIBERMAP"), "row-mismatch", detail="FIBERMAP")


def test_off_grid_wavelength(fs, desi_small, tmp_path):
    bad = tmp_path / "coadd-offgrid.fits"
    with fits.open(desi_small.coadd) as hdul:
        hdul["R_WAVELENGTH"].data = hdul["R_WAVELENGTH"].data + 0.3
        hdul.writeto(bad)
    _expect(fs, bad, "off-grid", detail="R_WAVELENGTH")


def test_not_spectra_files(fs, tmp_path):
    _expect(fs, corrupt.write_text_file(tmp_path / "notes.fits"), "unknown-format")
    _expect(fs, corrupt.write_image_fits(tmp_path / "image.fits"), "unknown-format", detail="not a DESI coadd")
    _expect(fs, tmp_path / "no-such-coadd.fits", "unreachable")


def test_damaged_redrock_names_the_redrock_file(fs, desi_small, tmp_path):
    c, r = copy_pair(desi_small, tmp_path / "badrr")
    corrupt.truncate(desi_small.redrock, r, keep_fraction=0.5)
    e = _expect(fs, c, "truncated")
    assert r.name in str(e) and e.source == str(c)


@pytest.mark.parametrize("which", ["desi_pair", "desi_edr_shuffled"])
@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize("block_bytes", [None, 1, 300_000])
def test_read_into_equals_read_bit_for_bit(request, fs, which, verify, block_bytes, monkeypatch):
    """The chunk path (bytes straight into chunk rows) gives exactly what read() gives, iron and EDR masks.

    block_bytes: the default blocks, one file row per block, and blocks of a few rows (kept rows
    gathered out of blocks that hold sky fibres).
    """
    from skybatch.sources import desi as desi_mod
    from skybatch.sources.desi import DesiCoaddReader

    if block_bytes is not None:
        monkeypatch.setattr(desi_mod, "BLOCK_BYTES", block_bytes)
    desi_mod._VERIFIED.clear()
    pair = request.getfixturevalue(which)
    reader = DesiCoaddReader(verify_checksums=verify)
    for keep in (False, True):
        info = reader.inspect(fs, pair.coadd, keep_nonscience=keep)
        n = info.n_rows
        for a, b in ((0, n), (1, max(2, n // 2)), (n // 3, n)):
            ref = reader.read(fs, info, a, b)
            nw = reader.grid.n
            flux = np.full((b - a, nw), 7.0, np.float32)  # garbage: every pixel must be written
            ivar = np.full((b - a, nw), 7.0, np.float32)
            mask = np.full((b - a, nw), 7, np.uint32)
            meta, n_bad = reader.read_into(fs, info, a, b, flux, ivar, mask)
            assert np.array_equal(flux.view(np.uint32), ref.flux.view(np.uint32))
            assert np.array_equal(ivar.view(np.uint32), ref.ivar.view(np.uint32))
            assert np.array_equal(mask, ref.mask)
            assert n_bad == ref.n_bad_pixels
            for k, v in ref.meta.items():
                assert np.asarray(meta[k]).tolist() == np.asarray(v).tolist() or (
                    np.asarray(v).dtype.kind == "f" and np.array_equal(meta[k], v, equal_nan=True)), k


@pytest.mark.parametrize("which", ["desi_pair", "desi_edr_shuffled"])
def test_numpy_table_columns_equal_astropy(request, fs, which):
    """FIBERMAP and REDSHIFTS columns decoded with NumPy equal astropy's, every column that decoder covers."""
    from skybatch.sources import _fits
    from skybatch.sources import _fitsread
    from skybatch.sources._fitstable import read_columns

    pair = request.getfixturevalue(which)
    for path, hdu in ((pair.coadd, "FIBERMAP"), (pair.redrock, "REDSHIFTS")):
        size, _ = _fits.file_size(fs, path)
        with _fits.open_source(fs, path, size) as f:
            lay = _fits.scan_fits(f, path, size)
            e = lay.require(hdu)
            table = _fitsread.read_table(f, e, path)
            names = _fitsread.table_columns(table)
            checked = 0
            for name in names:
                got = read_columns(f, e, path, [name], verify=True)
                if got is None:  # a layout left to astropy (arrays, logicals...)
                    continue
                want = _fitsread.native_column(table, name)
                assert got[name].dtype == want.dtype or want.dtype == object, name
                assert got[name].tolist() == want.tolist() or np.array_equal(got[name], want, equal_nan=True), name
                checked += 1
            assert checked >= 5


def test_verified_planning_reads_headers_and_small_tables_only(fs, desi_pair):
    """With checksums on, planning still reads no pixel HDU; the chunk read verifies the images it reads, never RESOLUTION."""
    from skybatch.pipeline.ingest_checks import _reader_for

    cfs = CountingFS(fs)
    r = _reader_for(fs, desi_pair.coadd, "desi", verify_checksums=True)
    assert r.verify_checksums and not get_reader("desi").verify_checksums  # a copy: the shared reader is unchanged
    offsets = corrupt.hdu_offsets(desi_pair.coadd)
    size = Path(desi_pair.coadd).stat().st_size
    info = r.inspect(cfs, desi_pair.coadd)
    pixel_hdus = [n for n in offsets if n.split("_")[-1] in ("FLUX", "IVAR", "MASK", "RESOLUTION")]
    for name in pixel_hdus:
        _, d0, nb = offsets[name]
        assert cfs.touched(desi_pair.coadd, d0, d0 + nb) == 0, f"planning read data of {name}"
    assert cfs.bytes_read(desi_pair.coadd) < 0.02 * size
    cfs.reads.clear()
    nw = r.grid.n
    bufs = (np.empty((2, nw), np.float32), np.empty((2, nw), np.float32), np.empty((2, nw), np.uint32))
    from skybatch.sources import desi as desi_mod

    desi_mod._VERIFIED.clear()
    r.read_into(cfs, info, 7, 9, *bufs)
    for name in pixel_hdus:
        _, d0, nb = offsets[name]
        got = cfs.touched(desi_pair.coadd, d0, d0 + nb)
        assert got == (0 if name.endswith("RESOLUTION") else nb), name  # images read whole once, to verify them
    cfs.reads.clear()
    r.read_into(cfs, info, 7, 9, *bufs)  # verified already in this process: only the rows
    assert cfs.bytes_read(desi_pair.coadd) < 0.1 * size
