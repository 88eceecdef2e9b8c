"""Sky-line masking and continuum division."""

from __future__ import annotations

import numpy as np
import pytest

from skybatch.spectra import (
    CONTINUUM_FAILED,
    SKY_LINES_VACUUM,
    SKYLINE,
    air_to_vacuum,
    divide_continuum,
    mask_sky_lines,
    sky_line_mask,
)
from tests.spectra.spectra_synth import DESI_WAVE, gaussian_line_flux


def test_air_to_vacuum_matches_known_lines():
    assert air_to_vacuum(5577.339) == pytest.approx(5578.887, abs=0.01)  # [O I]
    assert air_to_vacuum(5889.950) == pytest.approx(5891.583, abs=0.01)  # Na D2
    assert air_to_vacuum(6562.80) == pytest.approx(6564.61, abs=0.01)  # Hα


def test_sky_lines_are_masked_within_the_half_width():
    n = 3
    flux = np.ones((n, DESI_WAVE.size), np.float32)
    ivar = np.ones_like(flux)
    f, iv, m = mask_sky_lines(flux, ivar, None, DESI_WAVE, halfwidth=2.0)
    hit = np.zeros(DESI_WAVE.size, bool)
    for c in SKY_LINES_VACUUM.values():
        hit |= np.abs(DESI_WAVE - c) <= 2.0
    np.testing.assert_array_equal(iv[0] == 0, hit)
    np.testing.assert_array_equal((m[1] & SKYLINE) != 0, hit)
    assert (f[:, hit] == 0).all() and (f[:, ~hit] == 1).all()
    o1 = SKY_LINES_VACUUM["[OI] 5577"]
    assert sky_line_mask(np.array([o1 - 1.9, o1 + 2.1]), halfwidth=2.0).tolist() == [True, False]


def test_continuum_division_flattens_the_continuum_and_keeps_lines():
    rng = np.random.default_rng(0)
    w = DESI_WAVE[:3000]
    x = (w - w.mean()) / np.ptp(w)
    cont = 10 + 4 * x + 3 * x**2
    line = gaussian_line_flux(w, 5000.0, 3.0, 200.0)
    sigma = 0.05
    flux = np.stack([cont + line + rng.normal(0, sigma, w.size) for _ in range(4)]).astype(np.float32)
    ivar = np.full_like(flux, 1 / sigma**2)
    ivar[1, 1000:1010] = 0
    out = divide_continuum(flux, ivar, None, width=151)
    far = (np.abs(w - 5000) > 30) & (np.arange(w.size) > 150) & (np.arange(w.size) < w.size - 150)
    np.testing.assert_allclose(np.median(out.flux[:, far], axis=1), 1.0, atol=0.003)
    peak = np.argmin(np.abs(w - 5000))
    expected_peak = 1 + line[peak] / cont[peak]
    np.testing.assert_allclose(out.flux[:, peak], expected_peak, rtol=0.03)
    assert (out.ivar[1, 1000:1010] == 0).all() and (out.flags == 0).all()
    # ivar scales by continuum²: ivar_out = ivar · c².
    np.testing.assert_allclose(out.ivar[0, far], out.continuum[0, far] ** 2 / sigma**2, rtol=1e-5)


def test_continuum_failures_are_flagged_not_nan():
    flux = np.stack([np.full(400, -5.0), np.ones(400)]).astype(np.float32)
    ivar = np.ones_like(flux)
    ivar[1] = 0
    with np.errstate(all="raise"):
        out = divide_continuum(flux, ivar, None, width=51)
    assert np.isfinite(out.flux).all() and np.isfinite(out.ivar).all()
    assert out.flags.tolist() == [CONTINUUM_FAILED, 0]  # negative continuum; nothing to lose
    assert (out.ivar == 0).all()
    with pytest.raises(ValueError, match="odd"):
        divide_continuum(flux, ivar, None, width=50)
