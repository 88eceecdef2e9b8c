"""Unexpected narrow emission lines (skybatch.models.anomaly_narrow) on generated galaxy spectra."""

from __future__ import annotations

import numpy as np


def _galaxies(n: int, rng: np.random.Generator, wl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Continuum + Ca H&K / Mg b absorption + varying [O II] and H-alpha emission, S/N ~ 15 per pixel."""
    cont = 1.0 + 0.3 * (wl[None, :] - 5000.0) / 3000.0 * rng.uniform(0.5, 1.5, (n, 1))
    f = cont.copy()
    for w0, depth in ((3934.8, 0.4), (3969.6, 0.3), (5176.7, 0.2)):
        f -= depth * cont * np.exp(-0.5 * ((wl[None, :] - w0) / 6.0) ** 2)
    for w0 in (3728.5, 6564.6):  # known lines: strong in some galaxies, absent in others
        f += rng.uniform(0.0, 4.0, (n, 1)) * np.exp(-0.5 * ((wl[None, :] - w0) / (w0 * 1.6e-4)) ** 2)
    sigma = 1.0 / 15.0
    return f + rng.normal(0, sigma, f.shape), np.full(f.shape, 1.0 / sigma**2)


def test_a_line_where_the_class_has_none_is_found_and_known_lines_are_not():
    from skybatch.models.anomaly_narrow import NarrowLineReference, known_line_mask, narrow_line_z

    rng = np.random.default_rng(4)
    wl = 10 ** np.arange(np.log10(3600.0), np.log10(7000.0), 1e-4)
    flux, ivar = _galaxies(200, rng, wl)
    spectype = np.array(["GALAXY"] * 200)
    ref = NarrowLineReference.fit(wl, flux, ivar, spectype)

    test, tiv = _galaxies(40, rng, wl)
    odd = [3, 17, 29]
    for i, w0 in zip(odd, (4450.0, 5620.0, 6105.0)):  # rest wavelengths matching no known line
        test[i] += 1.5 * np.exp(-0.5 * ((wl - w0) / (w0 * 1.6e-4)) ** 2)
    test[8] += 8.0 * np.exp(-0.5 * ((wl - 6564.6) / (6564.6 * 1.6e-4)) ** 2)  # a very strong H-alpha: known
    z = np.full(40, 0.3)
    nz = narrow_line_z(ref, test, tiv, np.array(["GALAXY"] * 40), z)
    ordinary = np.setdiff1d(np.arange(40), odd)
    assert nz[odd].min() > 10 and nz[ordinary].max() < 7, (nz[odd], np.sort(nz[ordinary])[-3:])
    assert known_line_mask(wl, "GALAXY")[np.argmin(np.abs(wl - 6564.6))]
    # quasars are skipped (NaN), and a spectrum without good pixels gives NaN
    assert np.isnan(narrow_line_z(ref, test[:2], tiv[:2], np.array(["QSO", "QSO"]), z[:2])).all()
    assert np.isnan(narrow_line_z(ref, test[:1], 0 * tiv[:1], np.array(["GALAXY"]), z[:1])).all()



def _stars(n: int, rng: np.random.Generator, wl: np.ndarray, cool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bright stars (S/N ~ 500 per pixel) from the sample generator's star model; ``cool`` ones are M stars
    (3000-3800 K: deep Ca II triplet, TiO band heads), the others 4500-9000 K."""
    from skybatch.sample.render import _star

    teff = np.where(cool, rng.uniform(3000.0, 3800.0, n), rng.uniform(4500.0, 9000.0, n))
    f = _star(wl, {"s_teff": teff}, np.zeros(n), np.ones(n))
    f /= np.median(f, axis=1, keepdims=True)
    sigma = 1.0 / 500.0
    return f + rng.normal(0, sigma, f.shape), np.full(f.shape, 1.0 / sigma**2)


def test_bright_cool_stars_absorption_shoulders_are_not_lines():
    """A minority subtype's deep absorption lines and bands leave narrow peaks between them (after the
    running-median continuum); in bright stars these must not read as lines, an added emission line must."""
    from skybatch.models.anomaly_narrow import NarrowLineReference, narrow_line_z

    rng = np.random.default_rng(7)
    wl = 10 ** np.arange(np.log10(3600.0), np.log10(9800.0), 1e-4)
    cool = rng.uniform(size=300) < 0.15
    flux, ivar = _stars(300, rng, wl, cool)
    ref = NarrowLineReference.fit(wl, flux, ivar, np.array(["STAR"] * 300))
    test, tiv = _stars(40, rng, wl, np.arange(40) < 12)
    odd = [20, 33]
    for i, w0 in zip(odd, (6320.0, 7900.0)):
        test[i] += 0.1 * np.exp(-0.5 * ((wl - w0) / (w0 * 1.6e-4)) ** 2)
    nz = narrow_line_z(ref, test, tiv, np.array(["STAR"] * 40), np.zeros(40))
    ordinary = np.setdiff1d(np.arange(40), odd)
    assert nz[odd].min() > 10 and nz[ordinary].max() < 7, (nz[odd], np.sort(nz[ordinary])[-3:])
