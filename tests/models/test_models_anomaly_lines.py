"""Line measurements at known rest wavelengths (skybatch.models.anomaly_lines) recover injected lines."""

from __future__ import annotations

import numpy as np

from skybatch.models.anomaly_lines import (
    GALAXY_LINES,
    QSO_LINES,
    line_features,
    measure_lines,
    qso_ew_reference,
)

WL = 10 ** np.arange(3.0, 3.95, 1e-4)


def _spectra(n, rng, lines, sigma_noise=0.02, cover=(1000.0, 9000.0)):
    """Flat continuum 1 plus Gaussian lines {rest A: (flux, sigma A)} per row; pixels outside ``cover`` have ivar 0."""
    flux = np.ones((n, WL.size))
    for i in range(n):
        for c, (f, s) in lines[i].items():
            flux[i] += f / (np.sqrt(2 * np.pi) * s) * np.exp(-0.5 * ((WL - c) / s) ** 2)
    flux += sigma_noise * rng.standard_normal(flux.shape)
    ivar = np.where((WL >= cover[0]) & (WL <= cover[1]), 1 / sigma_noise**2, 0.0)
    return flux, np.broadcast_to(ivar, flux.shape).copy()


def test_measure_lines_recovers_flux_within_errors_and_marks_uncovered_lines():
    rng = np.random.default_rng(0)
    flux, ivar = _spectra(40, rng, [{1549.06: (40.0, 12.0), 2799.49: (30.0, 15.0)}] * 40, cover=(1300.0, 3200.0))
    m = measure_lines(WL, flux, ivar, QSO_LINES)
    names = list(QSO_LINES)
    civ, mg = names.index("CIV"), names.index("MgII")
    # the line flux is recovered within its quoted error (pulls ~ N(0, 1))
    pull = (m["flux"][:, civ] - 40.0) / m["err"][:, civ]
    assert abs(np.mean(pull)) < 1.0 and 0.4 < np.std(pull) < 2.0
    assert np.allclose(np.median(m["ew"][:, mg]), 30.0, rtol=0.05)
    # H-alpha is not covered: NaN, not zero
    assert np.all(np.isnan(m["flux"][:, names.index("Halpha")]))


def test_qso_line_scale_separates_weak_and_strong_line_quasars():
    rng = np.random.default_rng(1)
    scale = np.exp(rng.normal(0.0, 0.3, 60))
    scale[:3] = np.exp(-1.5)  # weak lines
    scale[3:6] = np.exp(1.5)  # strong lines
    lines = [{1549.06: (40.0 * s, 12.0), 1908.73: (22.0 * s, 12.0), 2799.49: (32.0 * s, 15.0)} for s in scale]
    flux, ivar = _spectra(60, rng, lines, cover=(1300.0, 3200.0))
    st = np.full(60, "QSO")
    ref = qso_ew_reference(WL, flux, ivar)
    f = line_features(WL, flux, ivar, st, ref)["qso_line_scale"]
    assert np.all(np.isfinite(f))
    normal = f[6:]
    assert np.all(f[:3] < normal.min()) and np.all(f[3:6] > normal.max())
    assert abs(np.median(normal)) < 0.15


def test_trough_and_galaxy_ratio_features():
    rng = np.random.default_rng(2)
    base = {1549.06: (40.0, 12.0)}
    flux, ivar = _spectra(10, rng, [base] * 10, cover=(1250.0, 3000.0))
    flux[0, (WL > 1440) & (WL < 1510)] *= 0.4  # a broad absorption trough blueward of C IV
    trough = line_features(WL, flux, ivar, np.full(10, "QSO"))["qso_trough"]
    assert trough[0] > 0.3 and np.all(np.abs(trough[1:]) < 0.1)
    # galaxies: [OIII]/Hbeta of 10 in row 0, 1 elsewhere; [NeV] only in row 0
    gl = [{4862.68: (5.0, 1.5), 5008.24: (50.0 if i == 0 else 5.0, 1.5), 6564.61: (15.0, 1.5),
           3426.84: (4.0 if i == 0 else 0.0, 1.5)} for i in range(10)]
    flux, ivar = _spectra(10, rng, gl, cover=(3300.0, 7000.0))
    f = line_features(WL, flux, ivar, np.full(10, "GALAXY"))
    r = f["gal_[OIII]/Hbeta"]
    assert abs(r[0] - np.log(10.0)) < 0.2 and np.all(np.abs(r[1:]) < 0.2)
    assert f["gal_[NeV]_snr"][0] > 10 and np.all(np.abs(f["gal_[NeV]_snr"][1:]) < 4)
    assert set(GALAXY_LINES) >= {"[OIII]", "Hbeta", "[NeV]"}
