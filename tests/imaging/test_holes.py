"""Holes (isolated bad pixels) versus wide bad regions: split, filled before ZOGY, grown for detection."""

from __future__ import annotations

import numpy as np

from skybatch.imaging import difference_pair
from skybatch.imaging.holes import HOLE_WIDTH, fill_holes, grow_bad, split_bad
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
    """Dead pixels in the cores of stars in both images: zeroed they left PSF-sized residuals in
    S_corr (4.2 sigma here); filled from their neighbours, much less (2.6: a 3x3 mean misses a sharp
    core's curvature, so the holes stay kept out of detection over HOLE_GROW px)."""
    pair = make_image_pair((128, 128), seed=3, n_stars=150, n_transients=0, n_saturated=0)
    bright = np.argsort(pair.stars["flux_ref"])[::-1]
    x, y = pair.stars["x"], pair.stars["y"]
    ks = [i for i in bright if 20 < x[i] < 108 and 20 < y[i] < 108][:3]
    mask = np.zeros(pair.new.shape, bool)
    for k in ks:
        mask[int(round(y[k])), int(round(x[k]))] = True

    def s_corr(m):
        out = difference_pair(pair.new, pair.ref, new_mask=m, ref_mask=m, flux_ratio=pair.flux_ratio,
                              new_psf=pair.new_psf, ref_psf=pair.ref_psf)
        return np.asarray(out.zogy.S_corr)

    change = np.abs(s_corr(mask) - s_corr(np.zeros_like(mask)))[~grow_bad(mask, 0, 2)]
    assert change.max() < 3.0, change.max()
