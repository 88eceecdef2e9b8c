"""Cutouts, sub-tile plans, WCS alignment, injection and recovery, flux ratios, the generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skybatch.imaging import (
    FluxRatioWarning,
    align_to_grid,
    cutout_triplets,
    cutouts,
    fit_flux_ratio,
    gaussian_psf,
    inject_point_sources,
    pixel_map,
    plan_subtiles,
    recovery,
    robust_ratio,
    same_grid,
    zogy,
)
from skybatch.imaging.psf import find_stars
from skybatch.sample.imaging import make_image_pair, render_sources


def test_cutouts_centre_and_nan_padding():
    img = np.arange(50 * 40, dtype=np.float32).reshape(50, 40)
    c = cutouts(img, [10.4, 0.0, 39.0], [20.6, 0.0, 49.0], size=7)
    assert c.shape == (3, 7, 7)
    assert c[0, 3, 3] == img[21, 10]
    np.testing.assert_array_equal(c[0], img[18:25, 7:14])
    # a corner candidate: the outside is NaN, the inside is the image
    assert np.isnan(c[1, :3]).all() and np.isnan(c[1, :, :3]).all()
    np.testing.assert_array_equal(c[1, 3:, 3:], img[:4, :4])
    np.testing.assert_array_equal(c[2, :4, :4], img[46:, 36:])
    trip = cutout_triplets(img, img + 1, img * 0, [10.0], [20.0], size=5)
    assert trip.shape == (1, 3, 5, 5)
    np.testing.assert_array_equal(trip[0, 1] - trip[0, 0], np.ones((5, 5)))
    with pytest.raises(ValueError, match="odd"):
        cutouts(img, [1.0], [1.0], size=8)


@pytest.mark.parametrize("shape,tile,overlap", [((1000, 700), 256, 40), ((512, 512), 512, 64), ((300, 1030), 200, 0)])
def test_subtile_plan_partitions_the_image(shape, tile, overlap):
    plan = plan_subtiles(shape, tile, overlap)
    cover = np.zeros(shape, int)
    for st in plan:
        cover[st.interior_slices] += 1
        y0, y1, x0, x1 = st.interior
        wy0, wy1, wx0, wx1 = st.window
        assert wy0 <= y0 and y1 <= wy1 and wx0 <= x0 and x1 <= wx1
        assert wy0 == max(0, y0 - overlap) and wx1 == min(shape[1], x1 + overlap)
        assert y1 - y0 <= tile and x1 - x0 <= tile
        win = np.zeros(shape, bool)
        win[st.window_slices] = True
        sub = win[st.window_slices][st.interior_in_window]
        assert sub.shape == (y1 - y0, x1 - x0)
    assert (cover == 1).all()
    sizes = {st.interior[1] - st.interior[0] for st in plan}
    assert max(sizes) - min(sizes) <= 1  # no sliver tiles


def test_subtiles_with_one_psf_equal_whole_image_interior():
    """With a constant PSF the stitched interiors equal a whole-image ZOGY (away from edges)."""
    from skybatch.imaging import zogy_subtiles

    rng = np.random.default_rng(0)
    N = rng.normal(0, 5, (300, 260)).astype(np.float32)
    R = rng.normal(0, 3, (300, 260)).astype(np.float32)
    pn, pr = gaussian_psf(3.0, 15), gaussian_psf(2.0, 11)
    whole = zogy(N, R, pn, pr, 5.0, 3.0, 1.2)
    tiled = zogy_subtiles(N, R, lambda t: (pn, pr), 5.0, 3.0, 1.2, tile=100, overlap=40)
    core = (slice(40, -40), slice(40, -40))
    np.testing.assert_allclose(tiled.S_corr[core], whole.S_corr[core], atol=2e-3)
    np.testing.assert_allclose(tiled.F_psf[core], whole.F_psf[core], atol=1e-3 * np.abs(whole.F_psf).max())


def test_align_identity_and_shifted_grid():
    p = make_image_pair((160, 160), seed=2, n_stars=40, n_saturated=0, shift=(0.4, -0.3), star_snr_min=50)
    assert same_grid(p.new_wcs, p.new.shape, p.new_wcs.deepcopy(), p.new.shape)
    assert not same_grid(p.new_wcs, p.new.shape, p.ref_wcs, p.ref.shape)
    ident = align_to_grid(p.new, p.new_wcs, p.new_wcs, p.new.shape)
    assert ident.identity and ident.image is p.new
    al = align_to_grid(p.ref_subtracted(), p.ref_wcs, p.new_wcs, p.new.shape, variance=p.ref_var)
    assert not al.identity and al.variance is not None
    assert al.footprint[5:-5, 5:-5].all()
    # bright isolated stars land on their new-grid positions
    cat = find_stars(np.nan_to_num(al.image), p.ref_sigma, threshold=10.0)
    sx, sy = p.stars["x"], p.stars["y"]
    d = []
    for x, y in zip(cat["x"], cat["y"]):
        k = int(np.argmin(np.hypot(sx - x, sy - y)))
        if p.stars["flux_ref"][k] > 5000 and 8 < x < 150 and 8 < y < 150:
            d.append((x - sx[k], y - sy[k]))
    d = np.asarray(d)
    assert len(d) >= 5
    assert np.abs(np.median(d, axis=0)).max() < 0.06  # without alignment the offset is (0.4, -0.3)
    # the coarse-grid pixel map equals the exact per-pixel WCS map
    ex, ey = pixel_map(p.ref_wcs, p.new_wcs, p.new.shape, step=1)
    cx, cy = pixel_map(p.ref_wcs, p.new_wcs, p.new.shape)
    assert max(np.abs(ex - cx).max(), np.abs(ey - cy).max()) < 1e-4
    assert np.median(ex - np.arange(160)[None, :]) == pytest.approx(0.4, abs=1e-3)


def test_injection_flux_and_position():
    psf = gaussian_psf(3.0, 19)
    img = np.zeros((80, 80), np.float32)
    out = inject_point_sources(img, psf, [30.3, 55.0], [40.7, 20.0], [1000.0, 500.0])
    assert float(out.sum()) == pytest.approx(1500.0, rel=1e-5)
    yy, xx = np.mgrid[:80, :80]
    box = (slice(25, 56), slice(15, 46))
    w = out[box]
    assert float((w * xx[box]).sum() / w.sum()) == pytest.approx(30.3, abs=0.02)
    assert float((w * yy[box]).sum() / w.sum()) == pytest.approx(40.7, abs=0.02)
    assert img.sum() == 0  # the input is not modified
    noisy = inject_point_sources(img, psf, [40.0], [40.0], [1e4], gain=2.0, seed=1)
    resid = noisy - inject_point_sources(img, psf, [40.0], [40.0], [1e4])
    assert 0 < resid.std() and abs(float(resid.sum())) < 5 * np.sqrt(1e4 / 2.0)
    # an injected source is measured by ZOGY at its injected flux
    rng = np.random.default_rng(4)
    N = inject_point_sources(rng.normal(0, 5, (96, 96)).astype(np.float32), psf, [48.4], [47.6], [3000.0])
    r = zogy(N, rng.normal(0, 3, (96, 96)).astype(np.float32), psf, gaussian_psf(2.0, 13), 5.0, 3.0, 1.0)
    assert r.F_psf[48, 48] == pytest.approx(3000.0, abs=4 * float(r.F_psf_err[48, 48]) + 0.05 * 3000)


def test_recovery_bookkeeping():
    det = pd.DataFrame({"x": [10.2, 50.0, 90.0, 30.5], "y": [10.1, 50.0, 90.0, 70.0],
                        "flux": [100.0, 80.0, 10.0, 60.0], "flux_err": [10.0, 10.0, 10.0, 10.0],
                        "significance": [10.0, 8.0, 5.0, 6.0]})
    rec = recovery(det, x=[10.0, 50.5, 70.0], y=[10.0, 50.0, 70.0], flux=[90.0, 100.0, 50.0],
                   snr=[9.0, 10.0, 4.0], area=1e6, known_x=[30.0], known_y=[70.0])
    m = rec.matched
    assert m.recovered.tolist() == [True, True, False]
    assert m.det_index.tolist() == [0, 1, -1]
    assert m.pull.iloc[0] == pytest.approx(1.0) and m.pull.iloc[1] == pytest.approx(-2.0)
    assert rec.n_false == 1 and rec.false_per_mpix == pytest.approx(1.0)  # (90, 90); (30.5, 70) is known
    b = rec.bins.set_index("snr_lo")
    assert b.loc[3.0, "n_injected"] == 1 and b.loc[3.0, "n_recovered"] == 0
    assert b.loc[8.0, "n_injected"] == 2 and b.loc[8.0, "completeness"] == 1.0


def test_flux_ratio_robust_to_variables_and_outliers():
    rng = np.random.default_rng(5)
    b = rng.uniform(500, 20000, 60)
    eb = np.sqrt(25.0 * 20 + b / 2)
    a = 1.7 * b + rng.normal(0, 1.7 * eb)
    a[:8] *= rng.choice([0.6, 1.5], 8)  # variables
    beta, err, keep = robust_ratio(a, b, 1.7 * eb, eb)
    assert keep[:8].sum() == 0 and keep[8:].mean() > 0.9
    assert abs(beta - 1.7) < 3 * err and err < 0.01


def test_flux_ratio_fit_and_fallbacks(star_field):
    p = star_field
    fr = fit_flux_ratio(p.new_subtracted(), p.ref_subtracted(), p.new_psf, p.ref_psf, p.new_sigma,
                        p.ref_sigma, mask=p.new_saturated | p.ref_saturated,
                        new_gain=p.new_gain, ref_gain=p.ref_gain)
    assert fr.method == "stars" and fr.n_stars >= 10
    assert abs(fr.value - p.flux_ratio) < 4 * fr.error and fr.error < 0.02
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (64, 64)).astype(np.float32)
    with pytest.warns(FluxRatioWarning, match="1.0"):
        f0 = fit_flux_ratio(noise, noise, gaussian_psf(2.0, 9), gaussian_psf(2.0, 9), 1.0, 1.0)
    assert f0.method == "default" and f0.value == 1.0


def test_generator_truth_is_consistent():
    p = make_image_pair((256, 256), seed=3, n_stars=100, n_galaxies=10, n_transients=8, flux_ratio=0.7,
                        shift=(0.25, 0.0))
    assert p.new.dtype == np.float32 and p.new.shape == (256, 256)
    assert p.new.max() <= p.saturation and p.new_saturated.sum() > 0
    assert len(p.transients["x"]) == 8
    # transients only in the science image, with the stated flux
    t_model = render_sources(p.new.shape, p.transients["x"], p.transients["y"], p.transients["flux"],
                             p.new_fwhm, size=p.new_psf.shape[0])
    static_new = p.new_model - t_model
    inner = (slice(20, -20), slice(20, -20))
    # static sources: new = flux_ratio x ref in total flux (shift moves them by 0.25 px only)
    assert static_new[inner].sum() == pytest.approx(p.flux_ratio * p.ref_model[inner].sum(), rel=0.01)
    np.testing.assert_allclose(p.new_var, p.new_sigma**2 + np.clip(p.new_model, 0, None) / p.new_gain, rtol=1e-5)
    assert p.ref_wcs.wcs.crpix[0] - p.new_wcs.wcs.crpix[0] == pytest.approx(0.25)
    assert float(p.new_psf.sum()) == pytest.approx(1.0, abs=1e-6)
