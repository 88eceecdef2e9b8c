"""Holes (isolated bad pixels) versus wide bad regions: split, filled before ZOGY, grown for detection."""

from __future__ import annotations

import numpy as np

from skybatch.imaging import difference_pair
from skybatch.imaging.holes import HOLE_GROW, HOLE_WIDTH, fill_error, fill_holes, grow_bad, split_bad
from skybatch.imaging.margins import FILL_RESIDUAL_MAX
from skybatch.sample.imaging import make_image_pair


def test_split_fill_and_grow():
    bad = np.zeros((64, 64), bool)
    bad[:, :10] = True  # a NaN border: wide
    bad[30, 40] = True  # a dead pixel
    bad[20:40, 50] = True  # a bad column segment
    bad[5:7, 30:32] = True  # a 2x2 cosmic-ray hit
    wide, holes = split_bad(bad, HOLE_WIDTH)
    assert wide[:, :10].all() and wide.sum() == 640
    assert holes.sum() == 1 + 20 + 4 and not (wide & holes).any()
    yy, xx = np.mgrid[:64, :64]
    img = 3.0 + 0.1 * xx + 0.05 * yy  # a smooth image: filling from neighbours is exact to the gradient
    img_bad = np.where(bad, np.nan, img)
    out = fill_holes(img_bad, holes, bad)
    np.testing.assert_allclose(out[holes], img[holes], atol=0.06)
    assert (out[wide] == 0).all() and np.isfinite(out).all()
    g = grow_bad(bad, 12, 2)
    assert g[:, :22].all() and not g[:, 23:28].any()  # the border grown by 12, nothing beyond
    assert g[28:33, 38:43].all() and not g[30, 44] and not g[30, 36]  # the dead pixel by 2 only


def test_a_hole_on_a_star_leaves_no_residual():
    """Dead pixels in the cores of the brightest stars in both images: zeroed they left PSF-sized
    residuals in S_corr (4.2 sigma here); filled from their neighbours up to 3.7 (a 3x3 mean misses
    a sharp core's curvature). The fill-error bound (fill_error -> fill_residual) covers every
    pixel where the residual exceeds 0.4 of it, so keeping detection out of where the bound exceeds
    FILL_RESIDUAL_MAX leaves under 1 sigma of the fill anywhere detection looks, at ~1 % of the field."""
    for seed in (3, 5):
        pair = make_image_pair((128, 128), seed=seed, n_stars=150, n_transients=0, n_saturated=0)
        bright = np.argsort(pair.stars["flux_ref"])[::-1]
        x, y = pair.stars["x"], pair.stars["y"]
        ks = [i for i in bright if 20 < x[i] < 108 and 20 < y[i] < 108][:3]
        mask = np.zeros(pair.new.shape, bool)
        for k in ks:
            mask[int(round(y[k])), int(round(x[k]))] = True

        def run(m, pair=pair):
            return difference_pair(pair.new, pair.ref, new_mask=m, ref_mask=m, flux_ratio=pair.flux_ratio,
                                   new_psf=pair.new_psf, ref_psf=pair.ref_psf)

        holed, clean = run(mask), run(np.zeros_like(mask))
        change = np.abs(np.asarray(holed.zogy.S_corr) - np.asarray(clean.zogy.S_corr))
        near = grow_bad(mask, 0, HOLE_GROW)
        assert change[~near].max() > 2.0  # the fill alone is not enough ...
        bound = np.asarray(holed.fill_residual)
        assert (change <= 0.5 * bound + 0.05).all()  # ... the bound holds everywhere ...
        looked = ~near & (bound <= FILL_RESIDUAL_MAX)
        assert change[looked].max() < 1.0, change[looked].max()  # ... and detection keeps out of the rest
        assert 0.002 < (~looked).mean() < 0.03
        # without holes the bound is zero: nothing is kept out
        assert not np.asarray(clean.fill_residual).any()


def test_fill_error_bounds_a_peaked_core():
    """On a Gaussian core (FWHM 3 px) the 3x3 fill is 0.37 of the peak low; the estimate is 0.44."""
    yy, xx = np.mgrid[:21, :21]
    s = 3.0 / 2.3548
    img = 100.0 * np.exp(-((xx - 10) ** 2 + (yy - 10) ** 2) / (2 * s * s))
    holes = np.zeros(img.shape, bool)
    holes[10, 10] = True
    filled = fill_holes(img, holes, holes)
    err = fill_error(filled, holes, np.zeros_like(holes))
    true = img[10, 10] - filled[10, 10]
    assert 35 < true < 39 and true <= err[10, 10] < 1.3 * true
    assert (err[~holes] == 0).all()


def test_margin_is_wide_only_where_the_edge_cuts_a_source():
    """A wide bad region (x < 20): full P_D-width margin next to the star its edge cuts, narrow elsewhere."""
    from skybatch.imaging.margins import detection_margin, edge_sources

    r = np.random.default_rng(0)
    bad = np.zeros((128, 128), bool)
    bad[:, :20] = True
    bad[100, 90] = True  # a hole
    yy, xx = np.mgrid[:128, :128]
    snr = r.normal(0, 1, bad.shape) + 30 * np.exp(-((xx - 21) ** 2 + (yy - 40) ** 2) / (2 * 1.3**2))
    snr[bad] = np.nan
    cut = edge_sources(bad, snr, psf_radius=7)
    assert cut[40, 19] and not cut[90, 19] and not cut[:, 20:].any()
    m = detection_margin(bad, cut, cut_grow=38, edge_grow=4, hole_grow=2)
    assert m[40, 20 + 37] and not m[40, 20 + 45]  # beside the cut star: a P_D width
    assert m[90, 23] and not m[90, 25]  # along empty sky: 4 px
    assert m[100, 92] and not m[100, 93]  # the hole: 2 px
