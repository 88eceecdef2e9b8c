"""Veto discs around bright and saturated stars: radius from the flux, bleeds covered, nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from skybatch.imaging.veto import bright_star_veto
from skybatch.sample.images import add_bleeds
from skybatch.sample.imaging import make_image_pair


@pytest.fixture(scope="module")
def field():
    p = make_image_pair((384, 384), seed=8, n_stars=300, n_saturated=3, flux_ratio=1.2)
    bleed = add_bleeds(p.new, p.saturation, seed=1)
    sat = (p.new >= p.saturation) | (p.ref >= p.saturation) | bleed
    return p, sat


def test_saturated_stars_and_bleeds_are_vetoed_with_a_margin(field):
    p, sat = field
    v = bright_star_veto([p.new_subtracted(), p.ref_subtracted()], [p.new_sigma, p.ref_sigma], p.new_fwhm, 3.5,
                         saturated=sat, accuracy=0.0)
    assert v.mask[sat].all()
    # every saturated region is grown by at least one P_D FWHM beyond its pixels
    import scipy.ndimage as ndi

    ring = ndi.binary_dilation(sat, iterations=3) & ~sat
    assert v.mask[ring].all()
    assert v.stars["saturated"].all() and len(v.stars["x"]) == ndi.label(sat, np.ones((3, 3)))[1] >= 2
    assert v.fraction < 0.1


def test_bright_star_discs_grow_with_flux_and_stop_at_the_threshold(field):
    p, sat = field
    acc, thr = 0.005, 5.0
    v = bright_star_veto([p.new_subtracted(), p.ref_subtracted()], [p.new_sigma, p.ref_sigma], p.new_fwhm, 3.5,
                         saturated=sat, accuracy=acc, threshold=thr)
    bright = ~v.stars["saturated"]
    assert bright.sum() >= 3
    snr, r = v.stars["snr"][bright], v.stars["radius"][bright]
    assert (snr > 0.5 * thr / acc).all()
    order = np.argsort(snr)
    assert (np.diff(r[order]) >= -1e-9).all()  # monotone in flux
    assert r.min() > 3.5  # at least the P_D FWHM beyond the star's 1-sigma isophote
    # the faint stars are untouched: a star of S/N ~ 50 is nowhere near a veto disc
    st = p.stars
    snr_true = st["flux_new"] / (p.new_sigma * np.sqrt(4 * np.pi) * p.new_fwhm / 2.3548)
    faint = (snr_true > 20) & (snr_true < 60)
    yy = np.clip(np.rint(st["y"][faint]).astype(int), 0, 383)
    xx = np.clip(np.rint(st["x"][faint]).astype(int), 0, 383)
    assert v.mask[yy, xx].mean() < 0.2
    # a less accurate PSF vetoes more stars; accuracy 0 vetoes only the saturated ones
    v2 = bright_star_veto([p.new_subtracted()], [p.new_sigma], p.new_fwhm, 3.5, saturated=sat, accuracy=4 * acc)
    assert (~v2.stars["saturated"]).sum() > bright.sum() / 2
    assert v2.mask.sum() > bright_star_veto([p.new_subtracted()], [p.new_sigma], p.new_fwhm, 3.5, saturated=sat,
                                            accuracy=acc).mask.sum()
    with pytest.raises(ValueError, match="accuracy"):
        bright_star_veto([p.new_subtracted()], [p.new_sigma], 3.0, 3.5, accuracy=float("nan"))
