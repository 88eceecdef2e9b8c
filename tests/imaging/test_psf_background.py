"""PSF estimation (saturated stars, too few stars, Moffat) and background / noise estimation."""

from __future__ import annotations

import warnings

import array_api_strict as xs
import numpy as np
import pytest

from skybatch.imaging import (
    PSFFallbackWarning,
    estimate_background,
    estimate_psf,
    gaussian_psf,
    moffat_psf,
    noise_map,
    psf_fwhm,
)
from skybatch.sample.imaging import make_image_pair
from skybatch.xp import to_numpy


def _compare(est: np.ndarray, true: np.ndarray) -> float:
    """Max |est - true| over the true peak, on the common centred stamp."""
    m = min(est.shape[0], true.shape[0])
    a = est[(est.shape[0] - m) // 2 :][:m, (est.shape[1] - m) // 2 :][:, :m]
    b = true[(true.shape[0] - m) // 2 :][:m, (true.shape[1] - m) // 2 :][:, :m]
    a, b = a / a.sum(), b / b.sum()
    return float(np.abs(a - b).max() / b.max())


def test_psf_fwhm_of_models():
    for fwhm in (1.3, 2.2, 4.0, 7.5):
        assert psf_fwhm(gaussian_psf(fwhm, 41)) == pytest.approx(fwhm, rel=1e-3)
    # Moffat: the core's Gaussian-equivalent, within ~15% of the true FWHM
    assert psf_fwhm(moffat_psf(4.0, 3.0, 41)) == pytest.approx(4.0, rel=0.15)


def test_psf_from_a_field_with_saturated_stars(star_field):
    p = star_field
    assert p.new_saturated.sum() > 20  # the field really has saturated stars
    img = p.new_subtracted()
    sat_level = p.saturation - float(p.new_background.max())  # conservative, background-subtracted
    est = estimate_psf(img, p.new_sigma, saturation=sat_level)
    assert est.method == "stack" and est.n_stars >= 10 and est.message == ""
    assert est.psf.shape[0] % 2 == 1 and float(est.psf.sum()) == pytest.approx(1.0, abs=1e-5)
    assert est.fwhm == pytest.approx(p.new_fwhm, rel=0.03)
    assert _compare(est.psf, p.new_psf) < 0.05
    # without a saturation level the flat-topped cores are still rejected
    est2 = estimate_psf(img, p.new_sigma)
    assert est2.fwhm == pytest.approx(p.new_fwhm, rel=0.03)
    assert _compare(est2.psf, p.new_psf) < 0.05
    # a noise map instead of a scalar, and a mask instead of a level
    est3 = estimate_psf(img, np.sqrt(p.new_var), mask=p.new_saturated)
    assert est3.method == "stack" and _compare(est3.psf, p.new_psf) < 0.05


def test_psf_moffat_profile():
    p = make_image_pair((384, 384), seed=9, n_stars=350, psf_profile="moffat", new_fwhm=3.5,
                        ref_fwhm=2.5, n_saturated=2)
    est = estimate_psf(p.new_subtracted(), p.new_sigma, mask=p.new_saturated, size=p.new_psf.shape[0])
    assert est.method == "stack"
    assert _compare(est.psf, p.new_psf) < 0.06


def test_psf_with_too_few_stars_falls_back_with_a_warning():
    p = make_image_pair((128, 128), seed=4, n_stars=2, n_saturated=0, star_snr_min=200.0,
                        new_fwhm=3.4)
    with pytest.warns(PSFFallbackWarning, match="gaussian-measured"):
        est = estimate_psf(p.new_subtracted(), p.new_sigma, min_stars=5)
    assert est.method == "gaussian-measured" and est.n_stars == 0
    assert est.fwhm == pytest.approx(3.4, rel=0.15)
    assert float(est.psf.sum()) == pytest.approx(1.0, abs=1e-5)
    # nothing at all: the default FWHM
    empty = np.random.default_rng(0).normal(0, 5, (96, 96)).astype(np.float32)
    with pytest.warns(PSFFallbackWarning, match="no sources"):
        est = estimate_psf(empty, 5.0, threshold=8.0, default_fwhm=2.7)
    assert est.method == "gaussian-default" and est.fwhm == 2.7
    assert est.psf.shape == (gaussian_psf(2.7).shape)


def test_psf_estimation_array_api_fallback(star_field):
    p = star_field
    with warnings.catch_warnings():
        warnings.simplefilter("error", PSFFallbackWarning)
        est = estimate_psf(xs.asarray(p.new_subtracted()), p.new_sigma, mask=xs.asarray(p.new_saturated))
    assert est.method == "stack"
    psf = to_numpy(est.psf)
    assert psf_fwhm(psf) == pytest.approx(p.new_fwhm, rel=0.06)
    assert _compare(psf, p.new_psf) < 0.1


@pytest.mark.parametrize("method", ["sep", "mesh"])
def test_background_and_noise(method):
    p = make_image_pair((384, 384), seed=2, n_stars=250, sky_gradient=0.05)
    img = p.new if method == "sep" else xs.asarray(p.new)
    b = estimate_background(img, mask=p.new_saturated if method == "sep" else xs.asarray(p.new_saturated))
    assert b.method == ("sep" if method == "sep" else "xp-mesh")
    back = np.asarray(to_numpy(b.background))
    err = back - p.new_background
    assert abs(float(np.median(err))) < 0.1 * p.new_sigma
    assert float(np.abs(err[20:-20, 20:-20]).max()) < 0.4 * p.new_sigma  # gradient followed
    assert b.global_rms == pytest.approx(p.new_sigma, rel=0.02)
    assert float(np.median(to_numpy(b.rms))) == pytest.approx(p.new_sigma, rel=0.05)


def test_noise_map_from_rms_variance_ivar():
    var = np.array([[4.0, 0.0], [np.nan, 9.0]], np.float32)
    s = noise_map(variance=var)
    np.testing.assert_allclose(s, [[2.0, np.inf], [np.inf, 3.0]])
    s = noise_map(ivar=np.array([[0.25, 0.0]], np.float32).reshape(1, 2))
    np.testing.assert_allclose(s, [[2.0, np.inf]])
    s = noise_map(rms=3.0, like=np.zeros((2, 3)))
    assert s.shape == (2, 3) and (s == 3.0).all()
    with pytest.raises(ValueError, match="exactly one"):
        noise_map(rms=1.0, variance=var)
