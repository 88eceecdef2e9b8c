"""Flux-conserving resampling: conservation, identity, specutils agreement, χ², bad pixels."""

from __future__ import annotations

import numpy as np
import pytest

from skybatch.spectra import BADPIX, NOCOVERAGE, loglam_grid, pixel_edges, resample, resample_plan
from tests.spectra.spectra_synth import DESI_WAVE, random_grid, smooth_spectra


def _integral(flux: np.ndarray, wave: np.ndarray, x0: float, x1: float) -> np.ndarray:
    """Exact ∫ of the piecewise-constant flux over [x0, x1] (float64 reference)."""
    edges = pixel_edges(wave)
    cum = np.concatenate([np.zeros((flux.shape[0], 1)), np.cumsum(flux * np.diff(edges), axis=1)], axis=1)
    return np.array([np.interp(x1, edges, c) - np.interp(x0, edges, c) for c in cum])


def _dense_matrix(w_in: np.ndarray, w_out: np.ndarray) -> np.ndarray:
    """R (n_out, n_in) obtained by resampling unit impulses (all ivar = 1)."""
    eye = np.eye(w_in.size)
    return resample(eye, np.ones_like(eye), None, w_in, w_out, min_good_fraction=1e-9).flux.T


# ---------------------------------------------------------------------------------------
# Flux conservation
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_spectrum", [False, True])
def test_integrated_flux_is_preserved(per_spectrum):
    rng = np.random.default_rng(1)
    w_in = DESI_WAVE[:2500]  # 3600-5599 Å at 0.8 Å
    truth = smooth_spectra(rng, w_in, 6)
    flux = truth.astype(np.float32)
    ivar = np.ones_like(flux)
    w_out = loglam_grid(np.log10(3620.0), np.log10(5570.0), 1e-4)
    wi = np.broadcast_to(w_in, flux.shape).copy() if per_spectrum else w_in
    out = resample(flux, ivar, None, wi, w_out)
    assert (out.ivar > 0).all()
    e = pixel_edges(w_out)
    got = np.sum(out.flux.astype(np.float64) * np.diff(e), axis=1)
    want = _integral(flux.astype(np.float64), w_in, e[0], e[-1])
    np.testing.assert_allclose(got, want, rtol=2e-6)


def test_flux_conserved_onto_coarse_nonuniform_grid():
    rng = np.random.default_rng(2)
    w_in = random_grid(rng, 4000.0, 800, 0.3, 1.2)
    flux = smooth_spectra(rng, w_in, 4).astype(np.float32)
    w_out = random_grid(rng, w_in[5], 120, 2.0, 6.0)
    w_out = w_out[w_out < w_in[-6]]
    out = resample(flux, np.ones_like(flux), None, w_in, w_out)
    e = pixel_edges(w_out)
    got = np.sum(out.flux.astype(np.float64) * np.diff(e), axis=1)
    np.testing.assert_allclose(got, _integral(flux.astype(np.float64), w_in, e[0], e[-1]), rtol=2e-6)


# ---------------------------------------------------------------------------------------
# Identity
# ---------------------------------------------------------------------------------------
def test_identity_on_the_same_grid_is_exact():
    rng = np.random.default_rng(3)
    w = random_grid(rng, 5000.0, 400, 0.5, 1.5)
    flux = rng.normal(3, 1, (5, w.size)).astype(np.float32)
    ivar = rng.uniform(0.1, 4, flux.shape).astype(np.float32)
    mask = rng.integers(0, 3, flux.shape).astype(np.uint32) << 2
    out = resample(flux, ivar, mask, w, w.copy())
    np.testing.assert_array_equal(out.flux, flux)
    np.testing.assert_array_equal(out.ivar, ivar)
    np.testing.assert_array_equal(out.mask, mask)


def test_identity_per_spectrum_grid_to_float32_rounding():
    rng = np.random.default_rng(4)
    w = random_grid(rng, 5000.0, 300, 0.5, 1.5)
    flux = rng.normal(3, 1, (4, w.size)).astype(np.float32)
    ivar = rng.uniform(0.1, 4, flux.shape).astype(np.float32)
    out = resample(flux, ivar, None, np.broadcast_to(w, flux.shape).copy(), w)
    np.testing.assert_allclose(out.flux, flux, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.ivar, ivar, rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Agreement with specutils
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_agrees_with_specutils_flux_conserving_resampler(seed):
    u = pytest.importorskip("astropy.units")
    specutils = pytest.importorskip("specutils")
    from astropy.nddata import InverseVariance
    from specutils.manipulation import FluxConservingResampler

    rng = np.random.default_rng(100 + seed)
    w_in = random_grid(rng, 4000.0, 150, 0.3, 2.0)
    n_out = int(rng.integers(20, 300))
    w_out = np.unique(rng.uniform(w_in[0] - 5, w_in[-1] + 5, n_out))
    flux = rng.normal(5, 2, (3, w_in.size)).astype(np.float32)
    ivar = rng.uniform(0.2, 3, flux.shape).astype(np.float32)
    out = resample(flux, ivar, None, w_in, w_out)
    e_in, e_out = pixel_edges(w_in), pixel_edges(w_out)
    inside = (e_out[:-1] >= e_in[0]) & (e_out[1:] <= e_in[-1])
    assert inside.sum() > 5
    np.testing.assert_array_equal(out.ivar[:, ~inside], 0)
    for s in range(flux.shape[0]):
        spec = specutils.Spectrum(
            flux=flux[s].astype(np.float64) * u.Jy,
            spectral_axis=w_in * u.AA,
            uncertainty=InverseVariance(ivar[s].astype(np.float64)),
        )
        ref = FluxConservingResampler(extrapolation_treatment="nan_fill")(spec, w_out * u.AA)
        np.testing.assert_allclose(out.flux[s, inside], ref.flux.value[inside], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.ivar[s, inside], ref.uncertainty.array[inside], rtol=1e-5)


# ---------------------------------------------------------------------------------------
# χ² after resampling (diagonal ivar, covariance ignored)
# ---------------------------------------------------------------------------------------
def _chi2_draws(w_in, w_out, sigma, n_draw, seed):
    rng = np.random.default_rng(seed)
    model = 10.0
    noise = rng.normal(size=(n_draw, w_in.size)) * sigma
    flux = (model + noise).astype(np.float32)
    ivar = np.broadcast_to((1 / sigma**2).astype(np.float32), flux.shape).copy()
    out = resample(flux, ivar, None, w_in, w_out)
    valid = out.ivar[0] > 0
    assert (out.ivar[:, valid] > 0).all()
    chi2 = np.sum((out.flux[:, valid].astype(np.float64) - model) ** 2 * out.ivar[:, valid], axis=1)
    # True covariance of the output and the χ² variance it implies: Var = 2 tr((D C)^2).
    R = _dense_matrix(w_in, w_out)[valid]
    C = R @ np.diag(sigma**2) @ R.T
    D = np.diag(out.ivar[0, valid].astype(np.float64))
    var_pred = 2 * np.trace(D @ C @ D @ C)
    return chi2, int(valid.sum()), var_pred, C


def test_chi2_expectation_is_kept_but_scatter_grows_on_a_shifted_grid():
    """Misaligned output pixels share input pixels: E[χ²] = N still, Var[χ²] > 2N as predicted."""
    rng = np.random.default_rng(7)
    w_in = 5000.0 + np.arange(300) * 1.0
    sigma = rng.uniform(0.5, 2.0, w_in.size)
    w_out = 5000.5 + np.arange(298) * 1.0  # same width, shifted by half a pixel
    n_draw = 3000
    chi2, N, var_pred, _ = _chi2_draws(w_in, w_out, sigma, n_draw, seed=11)
    assert var_pred > 2 * N * 1.3  # neighbours share half their input: the ignored covariance matters
    assert abs(chi2.mean() - N) < 4 * np.sqrt(var_pred / n_draw)
    # Sample variance of χ² agrees with 2 tr((DC)²); its own sampling error is ~sqrt(2/n)·Var.
    assert chi2.var() == pytest.approx(var_pred, rel=6 * np.sqrt(2 / n_draw))
    # ... and equals 2 ν_eff with ν_eff = N²/tr((DC)²) < N effective degrees of freedom.
    nu_eff = 2 * N**2 / var_pred
    assert nu_eff < N


def test_chi2_is_exactly_chi2_distributed_when_output_pixels_merge_whole_input_pixels():
    rng = np.random.default_rng(8)
    w_in = 5000.0 + np.arange(400) * 1.0
    sigma = rng.uniform(0.5, 2.0, w_in.size)
    w_out = 5000.5 + 2.0 * np.arange(199)  # each output pixel = 2 whole input pixels
    n_draw = 3000
    chi2, N, var_pred, C = _chi2_draws(w_in, w_out, sigma, n_draw, seed=12)
    off = C - np.diag(np.diag(C))
    assert np.abs(off).max() == 0.0  # no shared input pixel: no covariance at all
    assert var_pred == pytest.approx(2 * N, rel=1e-5)
    assert abs(chi2.mean() - N) < 4 * np.sqrt(2 * N / n_draw)
    assert chi2.var() == pytest.approx(2 * N, rel=6 * np.sqrt(2 / n_draw))


# ---------------------------------------------------------------------------------------
# Per-spectrum grids
# ---------------------------------------------------------------------------------------
def _messy(rng, n, n_in):
    flux = rng.normal(5, 1, (n, n_in)).astype(np.float32)
    ivar = rng.uniform(0.5, 2, (n, n_in)).astype(np.float32)
    ivar[rng.random((n, n_in)) < 0.05] = 0
    flux[rng.random((n, n_in)) < 0.02] = np.nan
    ivar[rng.random((n, n_in)) < 0.01] = np.inf
    ivar[rng.random((n, n_in)) < 0.01] = -1
    mask = (rng.random((n, n_in)) < 0.1).astype(np.uint32) * rng.integers(1, 1 << 20, (n, n_in)).astype(np.uint32)
    return flux, ivar, mask


@pytest.mark.parametrize("min_good", [1.0, 0.5])
@pytest.mark.parametrize("rows", ["scaled", "general"])
def test_per_spectrum_grids_match_row_by_row_resampling(rows, min_good):
    rng = np.random.default_rng(9)
    n, n_in = 6, 250
    base = random_grid(rng, 4000.0, n_in, 0.4, 1.6)
    if rows == "scaled":  # rest-frame-like: λ / (1 + z)
        z = rng.uniform(0, 1.5, n)
        grids = base[None, :] / (1 + z[:, None])
    else:
        grids = np.stack([random_grid(rng, 2000.0 + 30 * i, n_in, 0.3, 2.0) for i in range(n)])
    w_out = np.unique(rng.uniform(grids.min() - 10, grids.max() + 10, 400))
    flux, ivar, mask = _messy(rng, n, n_in)
    out = resample(flux, ivar, mask, grids, w_out, min_good_fraction=min_good)
    for i in range(n):
        ref = resample(flux[i : i + 1], ivar[i : i + 1], mask[i : i + 1], grids[i], w_out, min_good_fraction=min_good)
        np.testing.assert_array_equal(out.ivar[i] > 0, ref.ivar[0] > 0)
        np.testing.assert_allclose(out.flux[i], ref.flux[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out.ivar[i], ref.ivar[0], rtol=1e-5)
        np.testing.assert_array_equal(out.mask[i], ref.mask[0])


# ---------------------------------------------------------------------------------------
# Bad pixels, coverage, masks
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_spectrum", [False, True])
def test_bad_inputs_never_leak_as_nan(per_spectrum):
    rng = np.random.default_rng(10)
    w_in = random_grid(rng, 4000.0, 300, 0.5, 1.5)
    flux, ivar, mask = _messy(rng, 8, w_in.size)
    w_out = np.linspace(w_in[0] - 20, w_in[-1] + 20, 170)
    wi = np.broadcast_to(w_in, flux.shape).copy() if per_spectrum else w_in
    with np.errstate(all="raise"):  # no hidden floating-point errors either
        out = resample(flux, ivar, mask, wi, w_out)
    assert np.isfinite(out.flux).all() and np.isfinite(out.ivar).all()
    assert (out.ivar >= 0).all()
    assert (out.flux[out.ivar == 0] == 0).all()
    assert ((out.mask[out.ivar == 0] & NOCOVERAGE) != 0).all()
    assert ((out.mask[out.ivar > 0] & NOCOVERAGE) == 0).all()


def test_bad_pixel_invalidates_exactly_the_output_pixels_it_touches():
    w_in = 5000.0 + np.arange(100) * 1.0
    w_out = 5000.25 + np.arange(60) * 1.5
    flux = np.full((1, 100), 2.0, np.float32)
    ivar = np.ones_like(flux)
    mask = np.zeros(flux.shape, np.uint32)
    ivar[0, 40] = 0
    mask[0, 40] = BADPIX
    mask[0, 70] = 1 << 3
    out = resample(flux, ivar, mask, w_in, w_out)
    e_in, e_out = pixel_edges(w_in), pixel_edges(w_out)
    touches = lambda i: (e_out[:-1] < e_in[i + 1]) & (e_out[1:] > e_in[i])  # noqa: E731
    inside = (e_out[:-1] >= e_in[0]) & (e_out[1:] <= e_in[-1])
    np.testing.assert_array_equal(out.ivar[0] == 0, touches(40) | ~inside)
    np.testing.assert_array_equal((out.mask[0] & BADPIX) != 0, touches(40))
    np.testing.assert_array_equal((out.mask[0] & (1 << 3)) != 0, touches(70))
    np.testing.assert_allclose(out.flux[0, out.ivar[0] > 0], 2.0, rtol=1e-6)


def test_min_good_fraction_keeps_the_good_part_of_a_partly_bad_pixel():
    w_in = 5000.0 + np.arange(20) * 1.0
    w_out = 5000.5 + np.arange(9) * 2.0  # each output = 2 whole input pixels
    flux = np.arange(20, dtype=np.float32)[None, :] + 1
    ivar = np.full_like(flux, 4.0)
    ivar[0, 6] = 0  # output pixel 3 covers inputs 6 and 7
    strict = resample(flux, ivar, None, w_in, w_out)
    loose = resample(flux, ivar, None, w_in, w_out, min_good_fraction=0.5)
    assert strict.ivar[0, 3] == 0 and strict.flux[0, 3] == 0
    assert loose.flux[0, 3] == pytest.approx(flux[0, 7])  # mean over the good half
    assert loose.ivar[0, 3] == pytest.approx(4.0)  # (½)² / (½² · ¼) = 4: one pixel's worth
    assert loose.ivar[0, 2] == pytest.approx(8.0)  # two good pixels averaged
    assert strict.flux[0, 2] == pytest.approx(0.5 * (flux[0, 4] + flux[0, 5]))


def test_output_pixels_outside_or_straddling_the_input_range_have_no_information():
    w_in = 5000.0 + np.arange(50) * 1.0
    w_out = 4990.0 + np.arange(80) * 1.0
    flux = np.ones((2, 50), np.float32)
    out = resample(flux, np.ones_like(flux), None, w_in, w_out)
    e_in, e_out = pixel_edges(w_in), pixel_edges(w_out)
    inside = (e_out[:-1] >= e_in[0] - 1e-9) & (e_out[1:] <= e_in[-1] + 1e-9)
    np.testing.assert_array_equal(out.ivar[0] > 0, inside)
    assert ((out.mask[:, ~inside] & NOCOVERAGE) != 0).all()


def test_single_spectrum_float64_and_plan_reuse():
    w_in = np.linspace(4000, 5000, 501)
    w_out = np.linspace(4010, 4990, 300)
    flux = np.full(501, 1.7)
    out = resample(flux, np.full_like(flux, 4.0), None, w_in, w_out)
    assert out.flux.shape == (300,) and out.flux.dtype == np.float64
    np.testing.assert_allclose(out.flux, 1.7, rtol=1e-12)  # a constant density stays constant
    # Diagonal ivar of an average of input pixels: (Σp)²/Σp² · ivar >= (Δ_out/δ_in) · ivar,
    # with equality only for aligned pixels (shared input pixels are counted twice).
    ratio = np.diff(pixel_edges(w_out)) / 2.0
    assert (out.ivar >= 4.0 * ratio * (1 - 1e-12)).all()
    assert (out.ivar <= 4.0 * (ratio + 2)).all()
    assert resample_plan(w_in, w_out, dtype=np.float64) is resample_plan(w_in.copy(), w_out.copy(), dtype=np.float64)


def test_bad_grids_are_reported():
    flux = np.ones((1, 5), np.float32)
    with pytest.raises(ValueError, match="wave_in"):
        resample(flux, flux, None, np.array([1.0, 3, 2, 4, 5]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="does not match"):
        resample(flux, flux, None, np.arange(6.0), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="min_good_fraction"):
        resample(flux, flux, None, np.arange(5.0), np.array([1.0, 2.0]), min_good_fraction=0)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # array_api_strict's own numpy
@pytest.mark.parametrize("path", ["numpy", "strict", "per_spectrum"])
def test_extreme_values_give_the_same_answer_on_every_path(path):
    """A denormal ivar (1/ivar overflows) and an infinite flux: invalid, never inf/NaN."""
    w_in = 5000.0 + np.arange(40) * 1.0
    w_out = 5000.5 + np.arange(19) * 2.0
    flux = np.ones((1, 40), np.float32)
    ivar = np.ones_like(flux)
    ivar[0, 4] = 1e-45  # denormal: 1/ivar overflows
    flux[0, 20] = np.inf
    if path == "numpy":
        out = resample(flux, ivar, None, w_in, w_out)
    elif path == "per_spectrum":
        out = resample(flux, ivar, None, w_in[None, :], w_out)
    else:
        xps = pytest.importorskip("array_api_strict")
        out = resample(*(xps.asarray(a) for a in (flux, ivar)), None, xps.asarray(w_in), xps.asarray(w_out))
        out = type(out)(*(np.asarray(a) for a in out))
    assert np.isfinite(out.flux).all() and np.isfinite(out.ivar).all()
    bad = {2, 10}  # output 2 holds inputs 4-5, output 10 holds inputs 20-21
    assert {int(j) for j in np.flatnonzero(out.ivar[0] == 0)} == bad
    np.testing.assert_allclose(np.delete(out.flux[0], sorted(bad)), 1.0)
