"""Rest frame: known lines land at their rest wavelength; the bad-redshift rule."""

from __future__ import annotations

import numpy as np
import pytest

from skybatch.spectra import (
    BAD_REDSHIFT,
    DROPPED,
    OBSERVED_FRAME,
    GridSpec,
    pixel_edges,
    resample,
    to_rest_frame,
    usable_redshift,
)
from tests.spectra.spectra_synth import DESI_WAVE, gaussian_line_flux

HALPHA = 6564.61  # vacuum, Å
REST_GRID = GridSpec.parse("loglam:3.76:3.86:1e-4").wavelength()  # 5754-7244 Å


def _line_spectra(z: np.ndarray, area: float = 300.0, sigma_rest: float = 3.0):
    flux = np.stack([1.0 + gaussian_line_flux(DESI_WAVE, HALPHA * (1 + zi), sigma_rest * (1 + zi), area) for zi in z])
    return flux.astype(np.float32)


def _centroid_and_area(wave, flux):
    sel = np.abs(wave - HALPHA) < 40
    e = pixel_edges(wave)
    d = np.diff(e)[sel]
    line = (flux[:, sel].astype(np.float64) - 1.0) * d
    return (line * wave[sel]).sum(1) / line.sum(1), line.sum(1)


def test_rest_frame_puts_a_known_line_at_its_rest_wavelength():
    z = np.array([0.0, 0.05, 0.137, 0.2501, 0.31, 0.45])
    flux = _line_spectra(z)
    ivar = np.ones_like(flux)
    rf = to_rest_frame(flux, ivar, None, DESI_WAVE, z, np.zeros(z.size, np.int64))
    assert rf.wavelength.shape == flux.shape and rf.usable.all() and (rf.flags == 0).all()
    out = resample(rf.flux, rf.ivar, rf.mask, rf.wavelength, REST_GRID)
    centre, area = _centroid_and_area(REST_GRID, out.flux)
    np.testing.assert_allclose(centre, HALPHA, atol=0.05)  # pixels are ~1.5 Å wide
    # Flux density not rescaled: ∫ f dλ_rest = observed line flux / (1+z).
    np.testing.assert_allclose(area, 300.0 / (1 + z), rtol=2e-3)


def test_scale_flux_density_keeps_the_observed_integrated_flux():
    z = np.array([0.1, 0.3])
    flux = _line_spectra(z)
    rf = to_rest_frame(flux, np.ones_like(flux), None, DESI_WAVE, z, None, scale_flux_density=True)
    out = resample(rf.flux, rf.ivar, rf.mask, rf.wavelength, REST_GRID)
    sel = np.abs(REST_GRID - HALPHA) < 40
    d = np.diff(pixel_edges(REST_GRID))[sel]
    area = ((out.flux[:, sel] - (1 + z)[:, None]) * d).sum(1)
    np.testing.assert_allclose(area, 300.0, rtol=2e-3)
    np.testing.assert_allclose(rf.ivar[:, 0], 1 / (1 + z) ** 2, rtol=1e-6)


def test_unusable_redshifts_follow_the_stated_rule():
    z = np.array([0.1, np.nan, 0.2, 0.3, -1.0, 0.5])
    zwarn = np.array([0, 0, 4, -1, 0, 0])
    assert usable_redshift(z, zwarn).tolist() == [True, False, False, False, False, True]
    assert usable_redshift(z, zwarn, trust_unknown_zwarn=True).tolist() == [True, False, False, True, False, True]
    flux = _line_spectra(np.zeros(6))
    ivar = np.ones_like(flux)
    drop = to_rest_frame(flux, ivar, None, DESI_WAVE, z, zwarn)
    bad = ~drop.usable
    assert (drop.ivar[bad] == 0).all() and (drop.flux[bad] == 0).all()
    assert (drop.flags[bad] == BAD_REDSHIFT | DROPPED).all() and (drop.flags[~bad] == 0).all()
    np.testing.assert_array_equal(drop.wavelength[bad], np.broadcast_to(DESI_WAVE, (bad.sum(), DESI_WAVE.size)))
    np.testing.assert_allclose(drop.wavelength[0], DESI_WAVE / 1.1)
    keep = to_rest_frame(flux, ivar, None, DESI_WAVE, z, zwarn, bad_redshift="observed")
    np.testing.assert_array_equal(keep.flux, flux)
    assert (keep.flags[bad] == BAD_REDSHIFT | OBSERVED_FRAME).all()
    with pytest.raises(ValueError, match="bad_redshift"):
        to_rest_frame(flux, ivar, None, DESI_WAVE, z, zwarn, bad_redshift="skip")
