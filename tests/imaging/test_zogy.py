"""ZOGY core: equations against an independent implementation, noise calibration, fluxes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from skybatch.imaging import (
    ZogyPlan,
    detect_candidates,
    difference_pair,
    expected_snr,
    gaussian_psf,
    recovery,
    zogy,
)
from skybatch.sample.imaging import render_sources

from .conftest import source_free_interior


# ----------------------------------------------------------------- reference
def _pad_centred(p: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Stamp centre -> pixel (0, 0), written with explicit modular indices."""
    out = np.zeros(shape)
    hy, hx = p.shape[0] // 2, p.shape[1] // 2
    for i in range(p.shape[0]):
        for j in range(p.shape[1]):
            out[(i - hy) % shape[0], (j - hx) % shape[1]] += p[i, j]
    return out


def reference_zogy(N, R, pn, pr, sn, sr, beta, VN, VR):
    """Textbook ZOGY (paper eqs. 13-29) with full complex float64 FFTs."""
    f2, if2 = np.fft.fft2, np.fft.ifft2
    shape = N.shape
    Pn = f2(_pad_centred(pn / pn.sum(), shape))
    Pr = f2(_pad_centred(pr / pr.sum(), shape))
    den = sn**2 * np.abs(Pr) ** 2 + beta**2 * sr**2 * np.abs(Pn) ** 2
    D_hat = (Pr * f2(N) - beta * Pn * f2(R)) / np.sqrt(den)
    F_D = beta / np.sqrt(sn**2 + beta**2 * sr**2)
    PD_hat = beta * Pr * Pn / (F_D * np.sqrt(den))
    S = if2(F_D * D_hat * np.conj(PD_hat)).real
    kn = if2(beta * np.conj(Pn) * np.abs(Pr) ** 2 / den).real
    kr = if2(beta**2 * np.conj(Pr) * np.abs(Pn) ** 2 / den).real
    V = if2(f2(VN) * f2(kn**2)).real + if2(f2(VR) * f2(kr**2)).real
    F_S = np.sum(beta**2 * np.abs(Pn) ** 2 * np.abs(Pr) ** 2 / den) / N.size
    return {"D": if2(D_hat).real, "S": S, "S_corr": S / np.sqrt(V), "F_psf": beta * S / F_S,
            "F_S": F_S, "F_D": F_D}


def _asymmetric_psf(size: tuple[int, int], fwhm: float, ell: float, angle: float, lobe: float) -> np.ndarray:
    """Elliptical Gaussian with a fainter off-centre lobe (no symmetry to hide sign errors)."""
    m = max(size)
    core = gaussian_psf(fwhm, m | 1, ellipticity=ell, angle=angle, dtype="float64")
    side = gaussian_psf(1.5 * fwhm, m | 1, dx=1.3, dy=-0.7, dtype="float64")
    p = core + lobe * side
    c = (m | 1) // 2
    return p[c - size[0] // 2 : c + size[0] // 2 + 1, c - size[1] // 2 : c + size[1] // 2 + 1]


@pytest.mark.parametrize("shape", [(60, 45), (200, 151)])
def test_matches_textbook_zogy_with_asymmetric_psfs(shape):
    rng = np.random.default_rng(3)
    N = rng.normal(0, 5, shape)
    R = rng.normal(0, 2, shape)
    N[30, 20] += 400.0
    R[10:13, 5:8] += 50.0
    pn = _asymmetric_psf((13, 13), 3.0, 0.2, 0.4, 0.3)
    pr = _asymmetric_psf((9, 11), 2.0, 0.1, -0.8, 0.2)
    gain = 1.7
    VN = 25.0 + N / gain  # what zogy builds from new_gain (unclipped source term)
    VR = np.full(shape, 4.0)
    ref = reference_zogy(N, R, pn, pr, 5.0, 2.0, 1.3, VN, VR)
    res = zogy(N, R, pn, pr, 5.0, 2.0, 1.3, new_gain=gain, dtype="float64")
    for k in ("D", "S", "F_psf"):
        scale = np.abs(ref[k]).max()
        np.testing.assert_allclose(getattr(res, k), ref[k], atol=1e-9 * scale, err_msg=k)
    # the source-noise kernels come from a small grid when the image is large: 1e-3
    np.testing.assert_allclose(res.S_corr, ref["S_corr"], rtol=1e-3, atol=1e-3)
    assert res.F_S == pytest.approx(ref["F_S"], rel=1e-10)
    assert res.F_D == pytest.approx(ref["F_D"], rel=1e-12)
    assert res.D.dtype == np.float64 and res.D.shape == shape
    # float32 default agrees to single precision
    r32 = zogy(N.astype(np.float32), R.astype(np.float32), pn, pr, 5.0, 2.0, 1.3, new_gain=gain)
    assert r32.S_corr.dtype == np.float32
    np.testing.assert_allclose(r32.S_corr, ref["S_corr"], atol=2e-3 * np.abs(ref["S_corr"]).max())


def test_plan_noise_identities_and_psf_of_difference():
    plan = ZogyPlan((128, 96), gaussian_psf(3.2, 17), gaussian_psf(2.1, 13))
    f = plan.filters(6.0, 2.5, 0.7)
    # background-only variance of S equals F_S (so S_corr = S / sqrt(F_S) on empty sky)
    assert 36.0 * f.sum_kn2 + 6.25 * f.sum_kr2 == pytest.approx(f.F_S, rel=1e-5)
    assert f.F_D == pytest.approx(0.7 / np.sqrt(36.0 + 0.49 * 6.25))
    P_D = plan.psf_of_difference(f)
    assert P_D.shape == (17, 17) and float(P_D.sum()) == pytest.approx(1.0, abs=1e-6)
    assert np.unravel_index(np.argmax(P_D), P_D.shape) == (8, 8)
    # cached: same object for the same key, new one for another
    assert plan.filters(6.0, 2.5, 0.7) is f
    assert plan.filters(6.0, 2.5, 0.8) is not f


def test_scorr_is_unit_normal_on_empty_sky_true_psfs(star_field):
    p = star_field
    res = zogy(p.new_subtracted(), p.ref_subtracted(), p.new_psf, p.ref_psf, p.new_sigma,
               p.ref_sigma, p.flux_ratio, new_gain=p.new_gain, ref_gain=p.ref_gain)
    sf = source_free_interior(p)
    assert sf.sum() > 50_000
    assert float(res.S_corr[sf].std()) == pytest.approx(1.0, abs=0.02)
    assert abs(float(res.S_corr[sf].mean())) < 0.05
    assert float(res.D[sf].std()) == pytest.approx(1.0, abs=0.02)
    # with the true variance maps instead of gain: the same calibration
    res_v = zogy(p.new_subtracted(), p.ref_subtracted(), p.new_psf, p.ref_psf, p.new_sigma,
                 p.ref_sigma, p.flux_ratio, new_var=p.new_var, ref_var=p.ref_var)
    assert float(res_v.S_corr[sf].std()) == pytest.approx(1.0, abs=0.02)


def test_scorr_is_unit_normal_with_estimated_background_psfs_and_flux_ratio(star_field):
    p = star_field
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # this field has enough stars: no fallback allowed
        out = difference_pair(p.new, p.ref, new_gain=p.new_gain, ref_gain=p.ref_gain,
                              new_saturation=p.saturation, ref_saturation=p.saturation)
    assert out.new_psf.method == "stack" and out.ref_psf.method == "stack"
    assert out.zogy.flux_ratio_method == "stars"
    assert out.zogy.flux_ratio == pytest.approx(p.flux_ratio, rel=0.03)
    assert out.zogy.new_sigma == pytest.approx(p.new_sigma, rel=0.02)
    sf = source_free_interior(p)
    assert float(out.zogy.S_corr[sf].std()) == pytest.approx(1.0, abs=0.02)
    assert abs(float(out.zogy.S_corr[sf].mean())) < 0.05
    # the estimated-everything difference still finds the transients the S/N allows
    det = detect_candidates(out.zogy, 5.0, saturated=out.saturated, mask=out.bad)
    t = p.transients
    rec = recovery(det, t["x"], t["y"], t["flux"], expected_snr(out.zogy, t["x"], t["y"], t["flux"]),
                   area=p.new.size)
    bright = rec.matched[rec.matched.snr >= 8]
    assert len(bright) >= 20 and bright.recovered.mean() >= 0.95


def test_point_source_flux_error_matches_monte_carlo_scatter():
    """F_psf is unbiased and F_psf_err is its real scatter, source noise included."""
    rng = np.random.default_rng(7)
    shape = (96, 96)
    pn, pr = gaussian_psf(3.0, 19), gaussian_psf(2.2, 15)
    flux = 2500.0
    model = render_sources(shape, np.array([48.0]), np.array([48.0]), np.array([flux]), 3.0, size=19)
    plan = ZogyPlan(shape, pn, pr)
    est, err = [], []
    for _ in range(300):
        N = (rng.normal(0, 8, shape) + rng.poisson(model * 2.0) / 2.0).astype(np.float32)
        R = rng.normal(0, 4, shape).astype(np.float32)
        r = zogy(N, R, None, None, 8.0, 4.0, 1.3, new_gain=2.0, plan=plan)
        est.append(r.F_psf[48, 48])
        err.append(r.F_psf_err[48, 48])
    est, err = np.asarray(est), np.asarray(err)
    scatter = est.std(ddof=1)
    assert abs(est.mean() - flux) < 3 * scatter / np.sqrt(est.size)
    assert np.median(err) == pytest.approx(scatter, rel=0.12)
    # the source term matters here: background-only errors would be much smaller
    bkg_only = zogy(N, R, None, None, 8.0, 4.0, 1.3, plan=plan).F_psf_err[48, 48]
    assert bkg_only < 0.8 * np.median(err)


def test_astrometric_noise_term_lowers_scorr_at_bright_stars_only():
    rng = np.random.default_rng(1)
    shape = (128, 128)
    pn, pr = gaussian_psf(3.0, 19), gaussian_psf(2.5, 15)
    x = np.array([64.0])
    N = render_sources(shape, x + 0.15, x, np.array([2e5]), 3.0, size=19) + rng.normal(0, 5, shape)
    R = render_sources(shape, x, x, np.array([2e5]), 2.5, size=15) + rng.normal(0, 5, shape)
    plain = zogy(N, R, pn, pr, 5.0, 5.0, 1.0, new_gain=1.0, ref_gain=1.0)
    ast = zogy(N, R, pn, pr, 5.0, 5.0, 1.0, new_gain=1.0, ref_gain=1.0, astrometric_sigma=(0.15, 0.15))
    near = np.zeros(shape, bool)
    near[54:75, 54:75] = True
    assert np.abs(plain.S_corr[near]).max() > 8  # a 0.15 px misregistration of a bright star
    assert np.abs(ast.S_corr[near]).max() < 0.5 * np.abs(plain.S_corr[near]).max()
    far = np.zeros(shape, bool)
    far[10:30, 10:30] = True
    # on empty sky the term only adds the (small) variance of noise gradients
    ratio = ast.S_corr[far].std() / plain.S_corr[far].std()
    assert 0.95 < ratio <= 1.0
    # fluxes and their errors do not include the astrometric term
    np.testing.assert_allclose(ast.F_psf, plain.F_psf, atol=1e-5 * np.abs(plain.F_psf).max())
    np.testing.assert_allclose(ast.F_psf_err, plain.F_psf_err, rtol=1e-5)


def test_psf_error_term_silences_a_bright_star_with_a_wrong_psf_but_not_a_transient():
    rng = np.random.default_rng(3)
    shape = (128, 128)
    # the new image's true PSF is 3 % wider than the stamp ZOGY is given: a bright static star
    # leaves a ring; a faint transient elsewhere must keep its significance
    pn_true, pn, pr = 3.09, gaussian_psf(3.0, 19), gaussian_psf(2.5, 15)
    N = (render_sources(shape, np.array([40.0, 90.0]), np.array([40.0, 90.0]), np.array([3e5, 900.0]), pn_true,
                        size=19) + rng.normal(0, 5, shape))
    R = render_sources(shape, np.array([40.0]), np.array([40.0]), np.array([3e5]), 2.5, size=15) + rng.normal(0, 5, shape)
    plain = zogy(N, R, pn, pr, 5.0, 5.0, 1.0, new_gain=1.0, ref_gain=1.0)
    corr = zogy(N, R, pn, pr, 5.0, 5.0, 1.0, new_gain=1.0, ref_gain=1.0, psf_accuracy=0.03)
    star = (slice(28, 53), slice(28, 53))
    assert np.abs(plain.S_corr[star]).max() > 10  # the PSF mismatch is detected as a transient
    assert np.abs(corr.S_corr[star]).max() < 5  # the PSF-error variance accounts for it
    # a transient of S/N s keeps s / sqrt(1 + eps^2 s^2) (its own PSF is as uncertain); empty sky is unchanged
    s0 = float(plain.S_corr[90, 90])
    assert s0 > 8
    assert corr.S_corr[90, 90] == pytest.approx(s0 / np.sqrt(1 + (0.03 * s0) ** 2), rel=0.03)
    far = (slice(5, 25), slice(70, 120))
    assert corr.S_corr[far].std() / plain.S_corr[far].std() > 0.98
    np.testing.assert_allclose(corr.F_psf_err, plain.F_psf_err, rtol=1e-5)
    with pytest.raises(ValueError, match="psf_accuracy"):
        zogy(N, R, pn, pr, 5.0, 5.0, 1.0, psf_accuracy=-0.1)


def test_sigma_map_and_nonfinite_pixels():
    rng = np.random.default_rng(2)
    shape = (128, 128)
    N = rng.normal(0, 6, shape).astype(np.float32)
    R = rng.normal(0, 3, shape).astype(np.float32)
    pn, pr = gaussian_psf(3.0, 15), gaussian_psf(2.0, 11)
    scalar = zogy(N, R, pn, pr, 6.0, 3.0, 1.0)
    as_map = zogy(N, R, pn, pr, np.full(shape, 6.0, np.float32), 3.0, 1.0)
    np.testing.assert_allclose(as_map.S_corr, scalar.S_corr, atol=1e-4)
    N[40, 50] = np.nan
    R[90, 10] = np.inf
    r = zogy(N, R, pn, pr, 6.0, 3.0, 1.0)
    assert r.bad is not None and r.bad[40, 50] and r.bad[90, 10] and r.bad.sum() == 2
    for k in ("D", "S", "S_corr", "F_psf", "F_psf_err"):
        assert np.isfinite(getattr(r, k)).all(), k


def test_actionable_errors():
    img = np.zeros((64, 64), np.float32)
    with pytest.raises(ValueError, match="odd"):
        zogy(img, img, np.ones((4, 4)), gaussian_psf(2.0, 9), 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="align"):
        zogy(img, np.zeros((64, 60), np.float32), gaussian_psf(2.0, 9), gaussian_psf(2.0, 9), 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="flux_ratio"):
        zogy(img, img, gaussian_psf(2.0, 9), gaussian_psf(2.0, 9), 1.0, 1.0, -2.0)
    with pytest.raises(ValueError, match="larger than the image"):
        zogy(img[:8, :8], img[:8, :8], gaussian_psf(2.0, 9), gaussian_psf(2.0, 9), 1.0, 1.0, 1.0)
