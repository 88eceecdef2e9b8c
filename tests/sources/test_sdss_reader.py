"""SDSS spec-file reader: exact placement on the loglam grid, targetid rule, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from skybatch.sample import corrupt
from skybatch.sample.sdss_files import specobjid, write_sdss_spec
from skybatch.sources import SourceError, get_reader, healpix_nest64
from skybatch.sources.sdss import SPPIXMASK_NODATA_BIT

NODATA = np.uint32(1 << SPPIXMASK_NODATA_BIT)


def write_ramp(path: Path, offset: int, npix: int, *, plate: int = 4000, coeff0: float | None = None, **kw) -> Path:
    """A spectrum whose flux is its own pixel number, so positions can be checked exactly."""
    flux = np.arange(npix, dtype=np.float32) + 1.0
    ivar = np.full(npix, 4.0, np.float32)
    mask = np.zeros(npix, np.int64)
    mask[10:13] = 1 << 18
    ivar[10:13] = 0
    c0 = round(3.55 + offset * 1e-4, 4) if coeff0 is None else coeff0
    return write_sdss_spec(path, plate=plate, mjd=56000, fiber=123, coeff0=c0, flux=flux, ivar=ivar, and_mask=mask,
                           ra=150.25, dec=2.5, spectype="QSO", z=1.234, zwarning=4, **kw)


def read(fs, path):
    r = get_reader("sdss")
    info = r.inspect(fs, str(path))
    return info, r.read(fs, info, 0, info.n_rows)


@pytest.mark.parametrize("offset,npix", [(0, 4700), (37, 4500), (120, 4580)])
def test_spectrum_lands_on_exact_pixels(fs, tmp_path, offset, npix):
    p = write_ramp(tmp_path / f"spec-{offset}.fits", offset, npix)
    info, blk = read(fs, p)
    assert info.n_rows == 1 and info.grid.name == "sdss-loglam" and blk.flux.shape == (1, 4700)
    f, iv, m = blk.flux[0], blk.ivar[0], blk.mask[0]
    np.testing.assert_array_equal(f[offset : offset + npix], np.arange(npix, dtype=np.float32) + 1)
    # the store wavelength of each placed pixel is the file's own 10**(COEFF0 + i*1e-4)
    wave = info.grid.wavelength()[offset : offset + npix]
    np.testing.assert_allclose(wave, 10 ** (3.55 + (offset + np.arange(npix)) * 1e-4), rtol=1e-12)
    assert np.all(iv[offset : offset + 10] == 4.0) and np.all(iv[offset + 10 : offset + 13] == 0)
    assert np.all(m[offset + 10 : offset + 13] == np.uint32(1 << 18))
    outside = np.ones(4700, bool)
    outside[offset : offset + npix] = False
    assert np.all(f[outside] == 0) and np.all(iv[outside] == 0) and np.all(m[outside] == NODATA)
    assert not np.any(m[~outside] & NODATA)


def test_meta_and_targetid_rule(fs, tmp_path):
    small = write_ramp(tmp_path / "spec-small.fits", 5, 4400, plate=4000)
    big = write_ramp(tmp_path / "spec-big.fits", 5, 4400, plate=11000)
    _, b1 = read(fs, small)
    _, b2 = read(fs, big)
    s1, s2 = specobjid(4000, 123, 56000), specobjid(11000, 123, 56000)
    assert int(s1) < 2**63 <= int(s2)
    assert b1.meta["targetid"][0] == int(s1)  # fits in int64: the same number
    assert b2.meta["targetid"][0] < 0 and b2.meta["targetid"].astype(np.uint64)[0] == s2  # lossless bit reinterpretation
    m = b1.meta
    assert m["z"][0] == pytest.approx(1.234, abs=1e-6) and m["zwarn"][0] == 4 and m["spectype"][0] == "QSO"
    assert m["ra"][0] == 150.25 and m["dec"][0] == 2.5 and m["source_row"][0] == 0
    assert m["healpix"][0] == healpix_nest64(np.array([150.25]), np.array([2.5]))[0] >= 0
    assert m["plate"][0] == 4000 and m["mjd"][0] == 56000 and m["fiberid"][0] == 123
    assert m["survey"][0] == "boss"


def test_generated_sample_round_trip(fs, sdss_sample):
    for i, p in enumerate(sdss_sample.paths):
        _, blk = read(fs, p)
        t = sdss_sample.truth
        o, n = t["offset"][i], t["npix"][i]
        raw = fits.getdata(p, "COADD")
        np.testing.assert_array_equal(blk.flux[0, o : o + n], raw["flux"])
        np.testing.assert_array_equal(blk.mask[0, o : o + n], raw["and_mask"].astype(np.uint32))
        assert blk.meta["targetid"][0] == t["targetid"][i]
        assert blk.meta["spectype"][0] == t["spectype"][i]
        assert blk.meta["z"][0] == pytest.approx(t["z"][i], rel=1e-6)
        assert blk.meta["healpix"][0] == t["healpix"][i]


def test_older_specobj_extname_is_accepted(fs, tmp_path):
    p = write_ramp(tmp_path / "spec-old.fits", 3, 4400, spall_extname="SPECOBJ")
    assert "SPECOBJ" in [h.name for h in fits.open(p)]
    _, blk = read(fs, p)
    assert blk.meta["spectype"][0] == "QSO" and blk.meta["targetid"][0] == int(specobjid(4000, 123, 56000))


def _expect(fs, path, reason, detail=None):
    with pytest.raises(SourceError) as ei:
        get_reader("sdss").inspect(fs, str(path))
    assert ei.value.reason == reason, str(ei.value)
    assert Path(path).name in str(ei.value)
    if detail:
        assert detail in str(ei.value)


def test_off_grid_spectra_are_refused(fs, tmp_path):
    _expect(fs, write_ramp(tmp_path / "spec-lattice.fits", 0, 4400, coeff0=3.55 + 37.4e-4), "off-grid", "lattice")
    _expect(fs, write_ramp(tmp_path / "spec-blue.fits", 0, 4400, coeff0=3.5490), "off-grid", "falls off")
    _expect(fs, write_ramp(tmp_path / "spec-red.fits", 300, 4500), "off-grid", "falls off")
    _expect(fs, write_ramp(tmp_path / "spec-step.fits", 0, 4400, coeff1=2e-4), "off-grid", "COEFF1")


def test_bad_sdss_files(fs, tmp_path, sdss_sample):
    src = sdss_sample.paths[0]
    _expect(fs, corrupt.truncate(src, tmp_path / "spec-trunc.fits", keep_fraction=0.5), "truncated")
    _expect(fs, corrupt.drop_hdu(src, tmp_path / "spec-nospall.fits", "SPALL"), "missing-hdu", "SPALL")
    _expect(fs, corrupt.drop_hdu(src, tmp_path / "spec-nocoadd.fits", "COADD"), "missing-hdu", "COADD")
    _expect(fs, corrupt.garble_header(src, tmp_path / "spec-garbled.fits", hdu="COADD"), "corrupt")
