"""Plain FITS images (one image in any HDU, CCD keywords, maybe a weight map) read as tile planes."""

from __future__ import annotations

import json

import fsspec
import numpy as np
import pytest
from astropy.io import fits

from skybatch.sample.imaging import make_image_pair
from skybatch.sources.base import SourceError
from skybatch.sources.tiles import inspect_tile_source, read_tile_planes

FS = fsspec.filesystem("file")


@pytest.fixture(scope="module")
def pair():
    return make_image_pair((192, 256), seed=4, n_stars=60, sky_gradient=0.3, new_gain=2.0)


def _read(path, **kw):
    info = inspect_tile_source(FS, str(path), **kw)
    (plane,) = read_tile_planes(FS, str(path), info.planes, **kw)
    return info, plane


def test_primary_image_noise_from_the_image_and_gain(pair, tmp_path):
    h = pair.new_wcs.to_header()
    h.update(FILTER="ZTF_r", GAIN=pair.new_gain, RDNOISE=3.0, SATURATE=pair.saturation, MAGZP=26.5, EXPTIME=30.0,
             INSTRUME="ZTF/MOSAIC")
    img = pair.new.copy()
    img[:10, :20] = np.nan
    path = tmp_path / "ztf_field_0001_r.fits"
    fits.PrimaryHDU(img.astype(">f4"), header=h).writeto(path)
    info, p = _read(path)
    (pi,) = info.planes
    assert (pi.tile_id, pi.band, pi.instrument, pi.height, pi.width) == ("ztf_field_0001", "r", "ztf_mosaic", 192, 256)
    meta = json.loads(pi.meta)
    assert meta == {"gain": 2.0, "read_noise": 3.0, "saturate": pair.saturation, "zero_point": 26.5, "exptime": 30.0}
    assert p.wcs and "CTYPE1" in p.wcs
    # NaN pixels: bad (noise inf); elsewhere the estimated noise follows the truth (sky + source Poisson)
    assert np.isinf(p.noise[:10, :20]).all() and p.n_bad_pixels == 200
    good = np.isfinite(p.noise)
    ratio = p.noise[good] / np.sqrt(pair.new_var[good])
    assert abs(np.median(ratio) - 1) < 0.03, np.median(ratio)
    bright = good & (pair.new_model > 30 * pair.new_sigma) & ~pair.new_saturated
    assert bright.sum() > 20
    assert abs(np.median(p.noise[bright] / np.sqrt(pair.new_var[bright])) - 1) < 0.1  # the GAIN term


def test_image_extension_with_weight_map_and_mask(pair, tmp_path):
    h = pair.new_wcs.to_header()
    h["EXTNAME"] = "COADD"
    mask = np.zeros(pair.new.shape, np.int16)
    mask[50:52, :] = 4
    path = tmp_path / "stack_g.fits"
    fits.HDUList([
        fits.PrimaryHDU(), fits.ImageHDU(pair.new.astype(">f4"), header=h),
        fits.ImageHDU((1.0 / pair.new_var).astype(">f4"), name="WEIGHT"), fits.ImageHDU(mask, name="MASK"),
        fits.ImageHDU(np.zeros((4, 4), ">f4"), name="THUMB"),
    ]).writeto(path)
    info, p = _read(path)
    (pi,) = info.planes
    assert (pi.tile_id, pi.band, pi.instrument) == ("stack", "g", "generic")
    assert pi.locator == "fits:#1|#2|ivar|#3"
    np.testing.assert_allclose(p.noise[:50], np.sqrt(pair.new_var[:50]), rtol=1e-5)
    assert np.isinf(p.noise[50:52]).all()  # non-zero plain mask = bad
    # --hdu picks another image; the named one must exist and be 2-D
    _, t = _read(path, hdu="THUMB")
    assert t.image.shape == (4, 4)
    with pytest.raises(SourceError, match="no HDU of that name") as e:
        inspect_tile_source(FS, str(path), hdu="SCIENCE")
    assert e.value.reason == "missing-hdu"
    with pytest.raises(SourceError, match="expected a 2-D") as e:
        inspect_tile_source(FS, str(path), hdu="0")
    assert e.value.reason == "not-an-image"


def test_plain_band_and_refusals(tmp_path):
    img = np.ones((16, 16), ">f4")
    for raw, band in (("r.00000", "r"), ("g DECam SDSS c0001 4720.0 1520.0", "g"), ("Halpha", "Halpha")):
        path = tmp_path / "a.fits"
        fits.PrimaryHDU(img, header=fits.Header([("FILTER", raw)])).writeto(path, overwrite=True)
        assert inspect_tile_source(FS, str(path)).planes[0].band == band
    fits.PrimaryHDU(img).writeto(tmp_path / "nofilter.fits")
    assert inspect_tile_source(FS, str(tmp_path / "nofilter.fits")).planes[0].band == "unknown"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.ones(3))])]).writeto(
        tmp_path / "table.fits")
    with pytest.raises(SourceError, match="no 2-D image") as e:
        inspect_tile_source(FS, str(tmp_path / "table.fits"))
    assert e.value.reason == "not-an-image"
