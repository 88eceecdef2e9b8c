"""Plain FITS images in the layouts archives ship them: scaled integers with BLANK, NAXIS3 = 1
cubes, fpack'ed (RICE_1) and gzipped files, read as tile planes against the values astropy reads."""

from __future__ import annotations

import gzip
import shutil

import fsspec
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from skybatch.sources.base import SourceError
from skybatch.sources.tiles import inspect_tile_source, read_tile_planes

FS = fsspec.filesystem("file")
SHAPE = (96, 128)


def _header() -> fits.Header:
    h = fits.Header()
    h.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=150.1, CRVAL2=2.2, CRPIX1=64.5, CRPIX2=48.5,
             CD1_1=-7.2e-5, CD1_2=0.0, CD2_1=0.0, CD2_2=7.2e-5, FILTER="r", GAIN=2.0, RDNOISE=5.0, EXPTIME=60.0)
    return h


def _sky(seed: int = 0) -> np.ndarray:
    r = np.random.default_rng(seed)
    img = 200.0 + r.normal(0, 10.0, SHAPE)
    img[40:43, 60:63] += 3000.0  # a "star"
    return img


def _read(path, **kw):
    info = inspect_tile_source(FS, str(path), **kw)
    (plane,) = read_tile_planes(FS, str(path), info.planes, **kw)
    return info, plane


@pytest.mark.parametrize("bitpix,bscale,bzero", [(16, 2.0, 63536.0), (16, 1.0, 32768.0), (32, 0.01, 0.0)])
def test_scaled_integers_with_blank_pixels(tmp_path, bitpix, bscale, bzero):
    img = _sky()
    blank = -32768 if bitpix == 16 else -(2**31)
    q = np.round((img - bzero) / bscale)
    bad = np.zeros(SHAPE, bool)
    bad[5, :] = True
    bad[20:30, 7] = True
    q = np.where(bad, blank, q).astype(">i2" if bitpix == 16 else ">i4")
    hdu = fits.PrimaryHDU(q, _header())
    hdu.header.update(BSCALE=bscale, BZERO=bzero, BLANK=blank)
    path = tmp_path / f"dss_{bitpix}_r.fits"
    hdu.writeto(path)
    with fits.open(path) as f:
        want = np.asarray(f[0].data, np.float64)  # astropy applies BSCALE/BZERO ...
    if bscale != 1.0:
        assert np.isnan(want[bad]).all()  # ... and BLANK (but not for the BZERO = 32768 unsigned convention,
    # where the FITS standard still says the stored BLANK value marks an undefined pixel)
    info, p = _read(path)
    assert (info.planes[0].height, info.planes[0].width, info.planes[0].band) == (*SHAPE, "r")
    # BLANK pixels are bad (image 0, noise inf), not the number BLANK * BSCALE + BZERO
    assert p.n_bad_pixels == bad.sum()
    assert np.isinf(p.noise[bad]).all() and (p.image[bad] == 0).all()
    np.testing.assert_allclose(p.image[~bad], want[~bad], rtol=1e-6)
    assert np.isfinite(p.noise[~bad]).all()
    assert 9.0 < np.median(p.noise[~bad]) < 11.5  # the estimate is not thrown by the undefined pixels


def test_cube_with_naxis3_of_one_is_its_image(tmp_path):
    img = _sky(1).astype(np.float32)
    h = _header()
    hdu = fits.PrimaryHDU(img[None], h)
    hdu.header.update(CTYPE3="STOKES", CRVAL3=1.0, CRPIX3=1.0, CDELT3=1.0)
    path = tmp_path / "skyview_r.fits"
    hdu.writeto(path)
    assert fits.getdata(path).shape == (1, *SHAPE)
    info, p = _read(path)
    assert (info.planes[0].height, info.planes[0].width) == SHAPE
    np.testing.assert_array_equal(p.image, img)
    w = WCS(fits.Header.fromstring(p.wcs))
    assert w.naxis == 2
    np.testing.assert_allclose(w.wcs.crval, [150.1, 2.2])
    # a real 3-D cube is still refused, with its shape in the reason
    fits.PrimaryHDU(np.zeros((3, 8, 8), np.float32)).writeto(tmp_path / "cube_r.fits")
    with pytest.raises(SourceError, match=r"\(3, 8, 8\)") as e:
        inspect_tile_source(FS, str(tmp_path / "cube_r.fits"))
    assert e.value.reason == "not-an-image"


def test_fpacked_image_with_the_default_extname(tmp_path):
    img = _sky(2).astype(np.float32)
    path = tmp_path / "decam_r.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(img, _header(), compression_type="RICE_1")]).writeto(path)
    with fits.open(path) as f:
        assert f[1].name == "COMPRESSED_IMAGE"  # what fpack and astropy call it: not a "<detector>_IMAGE"
        want = np.asarray(f[1].data)
    info, p = _read(path)
    (pi,) = info.planes
    assert (pi.tile_id, pi.band, pi.height, pi.width) == ("decam", "r", *SHAPE)
    assert pi.locator.startswith("fits:#1|")
    np.testing.assert_array_equal(p.image, want)
    np.testing.assert_allclose(p.image, img, atol=2.0)  # RICE quantisation, well under the noise
    assert 9.0 < np.median(p.noise) < 11.5


def test_gzipped_image(tmp_path):
    img = _sky(3).astype(np.float32)
    img[:4] = np.nan
    plain = tmp_path / "ztf_000_r.fits"
    fits.PrimaryHDU(img, _header()).writeto(plain)
    path = tmp_path / "ztf_000_r.fits.gz"
    with open(plain, "rb") as a, gzip.open(path, "wb") as b:
        shutil.copyfileobj(a, b)
    info, p = _read(path)
    (pi,) = info.planes
    assert (pi.tile_id, pi.band, pi.height, pi.width) == ("ztf_000", "r", *SHAPE)
    np.testing.assert_array_equal(p.image[4:], img[4:])
    assert p.n_bad_pixels == 4 * SHAPE[1]
    # a damaged gzip is set aside with a reason, not a traceback
    broken = tmp_path / "broken_r.fits.gz"
    broken.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SourceError) as e:
        inspect_tile_source(FS, str(broken))
    assert e.value.reason == "corrupt"
