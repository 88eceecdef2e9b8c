"""Resampling a reference onto another grid: the propagated variance predicts the measured one."""

from __future__ import annotations

import math

import numpy as np
from astropy.wcs import WCS

from skybatch.imaging import align_to_grid
from skybatch.imaging.align import pixel_area_ratio


def _wcs(shape, scale_arcsec, rot_deg=0.0, shift=(0.0, 0.0)):
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [(nx + 1) / 2 + shift[0], (ny + 1) / 2 + shift[1]]
    c, s = math.cos(math.radians(rot_deg)), math.sin(math.radians(rot_deg))
    d = scale_arcsec / 3600.0
    w.wcs.cd = [[-d * c, d * s], [d * s, d * c]]
    return w


def test_resampled_variance_predicts_pure_noise():
    rng = np.random.default_rng(5)
    shape_src, shape_dst = (420, 420), (300, 300)
    yy = np.linspace(0.5, 2.0, shape_src[0])[:, None] * np.ones((1, shape_src[1]))
    var = (4.0 * yy).astype(np.float32)  # a noise level that varies across the source
    noise = (rng.standard_normal(shape_src) * np.sqrt(var)).astype(np.float32)
    src = _wcs(shape_src, 0.20)
    dst = _wcs(shape_dst, 0.26, rot_deg=33.0, shift=(0.37, -0.21))  # other scale, rotated, shifted, smaller
    al = align_to_grid(noise, src, dst, shape_dst, variance=var)
    ok = al.footprint & np.isfinite(al.image)
    assert ok.mean() > 0.8
    z2 = np.square(al.image[ok]) / al.variance[ok]
    # the per-pixel variance map predicts the measured pixel variance (sum w^2 var)
    assert abs(z2.mean() - 1.0) < 0.03, z2.mean()
    # the old propagation (sum w var) over-predicts it by far: interpolation averages the noise
    z2_white = np.square(al.image[ok]) / al.variance_white[ok]
    assert z2_white.mean() < 0.8
    # in bins of predicted variance (the prediction is right where it is low and where it is high)
    v = al.variance[ok]
    lo, hi = v < np.quantile(v, 0.2), v > np.quantile(v, 0.8)
    assert abs(z2[lo].mean() - 1) < 0.06 and abs(z2[hi].mean() - 1) < 0.06
    # the low-frequency power is what variance_white gives: 4x4 block sums of the resampled noise
    img = np.where(ok, al.image, 0.0)
    k = 4
    m = ok[: 296, : 296].reshape(74, k, 74, k).all(axis=(1, 3))
    sums = img[:296, :296].reshape(74, k, 74, k).sum(axis=(1, 3))[m]
    wsum = al.variance_white[:296, :296].reshape(74, k, 74, k).sum(axis=(1, 3))[m]
    # block sums of correlated noise have more variance than the per-pixel map says, about what the white one says
    ratio = np.mean(sums**2 / wsum)
    assert 0.8 < ratio < 1.1, ratio


def test_flux_conserving_resampling_keeps_a_star_total():
    shape_src, shape_dst = (200, 200), (120, 120)
    src = _wcs(shape_src, 0.2)
    dst = _wcs(shape_dst, 0.3, rot_deg=20.0, shift=(0.3, 0.1))
    yy, xx = np.mgrid[: shape_src[0], : shape_src[1]]
    star = 1000.0 * np.exp(-0.5 * ((xx - 100.3) ** 2 + (yy - 99.6) ** 2) / 3.0**2) / (2 * math.pi * 9.0)
    al = align_to_grid(star.astype(np.float32), src, dst, shape_dst, variance=np.ones(shape_src, np.float32),
                       flux_conserving=True)
    assert math.isclose(al.pixel_area_ratio, (0.3 / 0.2) ** 2, rel_tol=1e-4)
    assert math.isclose(pixel_area_ratio(src, dst, shape_dst), 2.25, rel_tol=1e-4)
    assert abs(np.nansum(al.image) / 1000.0 - 1.0) < 0.01
    ok = al.footprint
    # a target pixel summing 2.25 source pixels of unit variance: white variance 2.25
    assert abs(np.median(al.variance_white[ok]) - 2.25) < 0.01
