"""Unexpected narrow emission lines: a line at a rest wavelength where the object's class has none.

A background galaxy's [O II] 3727 A in an absorption-line galaxy, or any narrow line matching no
known line at the object's redshift, is a strong, compact signal that a global or windowed misfit
dilutes. Here every rest pixel gets the matched-filter amplitude of a narrow Gaussian line on the
continuum-subtracted flux (running median), judged against the members of the same class at that
pixel (their median and intrinsic scatter beyond noise); pixels within a velocity window of known
emission lines (galaxy nebular lines, quasar broad lines; for stars their Balmer and strong absorption lines) and of bright
night-sky lines (in the observed frame) are left out. The feature is the largest such z over the
spectrum. Pure NumPy / SciPy on the host; (N, P) arrays on a log-lambda rest grid.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from skybatch.spectra.skylines import sky_line_mask

__all__ = ["NarrowLineReference", "continuum_subtracted", "known_line_mask", "narrow_amplitude", "narrow_line_z"]

C_KMS = 299792.458
#: rest vacuum wavelengths (A) of emission lines an object may have (quasar broad and narrow, nebular)
KNOWN_LINES = (1215.67, 1240.8, 1397.6, 1402.8, 1549.1, 1640.4, 1908.7, 2326.0, 2796.4, 2803.5, 3346.8, 3426.9,
               3727.1, 3729.9, 3869.9, 3890.2, 3968.6, 3971.2, 4072.0, 4102.9, 4341.7, 4364.4, 4687.0, 4862.7,
               4960.3, 5008.2, 5200.3, 5877.3, 6302.0, 6365.5, 6549.9, 6564.6, 6585.3, 6718.3, 6732.7, 7137.8,
               7321.0, 7331.0)
BALMER = (3835.4, 3890.2, 3971.2, 4102.9, 4341.7, 4862.7, 6564.6)
#: strong stellar absorption features (rest vacuum A): Ca II H and K, the G band, Mg b, Na D, the Ca II
#: triplet and the TiO band heads of M stars. Their depth follows the spectral type, and after the
#: running-median continuum the flux between two neighbouring lines (or just blueward of a band head)
#: is a narrow peak whose height does too: in bright M stars (S/N ~ 700) the shoulder of Ca II 8544 A
#: was a 50-sigma "line" and put ordinary stars at the top of the ranking
STAR_ABSORPTION = (3934.8, 3969.6, 4305.6, 5168.8, 5174.1, 5185.1, 5891.6, 5897.6, 8500.4, 8544.4, 8664.5,
                   6159.0, 7054.0, 7589.0, 8432.0)
#: bright night-sky lines (observed, vacuum A; see skybatch.spectra.skylines): residuals of their
#: subtraction are not astrophysical
SKY_LINES = (5578.5, 5891.6, 6301.7, 6365.5)
#: (lines, half window in km/s) per class; other classes use the galaxy entry
_MASKS = {"QSO": (KNOWN_LINES, 3000.0), "STAR": (BALMER + STAR_ABSORPTION, 1000.0), "GALAXY": (KNOWN_LINES, 1000.0)}


def known_line_mask(wavelength: np.ndarray, spectype: str) -> np.ndarray:
    """(P,) True on rest pixels within the class's velocity window of a known emission line."""
    lines, kms = _MASKS.get(spectype, _MASKS["GALAXY"])
    wl = np.asarray(wavelength, np.float64)
    m = np.zeros(wl.size, bool)
    for line in lines:
        m |= np.abs(wl - line) < line * kms / C_KMS
    return m


def continuum_subtracted(flux: np.ndarray, ivar: np.ndarray, half: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Flux minus its running median over ``2 half + 1`` pixels (holes interpolated), 0 on bad pixels,
    and the good-pixel mask, (N, P) each (a spectrum with fewer than ``2 half`` good pixels has none)."""
    from scipy.ndimage import median_filter

    f = np.asarray(flux, np.float64)
    ok = (np.asarray(ivar) > 0) & np.isfinite(f)
    idx = np.arange(f.shape[1])
    r = np.zeros_like(f)
    for j in range(f.shape[0]):
        g = ok[j]
        if g.sum() < 2 * half:
            ok[j] = False
            continue
        xf = np.interp(idx, idx[g], f[j, g])
        r[j] = np.where(g, f[j] - median_filter(xf, size=2 * half + 1, mode="nearest"), 0.0)
    return r, ok


def narrow_amplitude(flux: np.ndarray, ivar: np.ndarray, sigma: float = 1.5, half: int = 25
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Matched-filter amplitude and its error, (N, P) each, of a Gaussian line of ``sigma`` pixels.

    The continuum is the running median over ``2 half + 1`` pixels (holes interpolated); the
    amplitude is the inverse-variance weighted least-squares peak of the line centred on each pixel
    (NaN where the kernel touches a bad pixel).
    """
    from scipy.signal import fftconvolve

    iv = np.asarray(ivar, np.float64)
    r, ok = continuum_subtracted(flux, iv, half)
    w = np.where(ok, iv, 0.0)
    k = np.exp(-0.5 * (np.arange(-4, 5) / sigma) ** 2)[None, :]
    num = fftconvolve(r * w, k, mode="same", axes=1)
    den = fftconvolve(w, k**2, mode="same", axes=1)
    full = fftconvolve(ok.astype(np.float64), np.ones((1, k.shape[1])), mode="same", axes=1) > k.shape[1] - 0.5
    den = np.where(full & (den > 0), den, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan), np.where(den > 0, 1.0 / np.sqrt(den), np.nan)


@dataclass
class NarrowLineReference:
    """Per class, per rest pixel (P,): median amplitude, intrinsic variance and the masked pixels."""

    wavelength: np.ndarray
    median: dict[str, np.ndarray]
    tau2: dict[str, np.ndarray]
    masked: dict[str, np.ndarray]

    @classmethod
    def fit(cls, wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, spectype: np.ndarray
            ) -> NarrowLineReference:
        """From class members (N, P) with their SPECTYPEs (N,)."""
        a, e = narrow_amplitude(flux, ivar)
        med, tau2, masked = {}, {}, {}
        for c in np.unique(spectype):
            m = spectype == c
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                p05, p50, p95 = np.nanpercentile(a[m], (5, 50, 95), axis=0)
                e2 = np.nanmedian(e[m] ** 2, axis=0)
            med[c] = np.nan_to_num(p50)
            tau2[c] = np.nan_to_num(np.maximum(((p95 - p05) / 3.29) ** 2 - e2, 0.0))
            masked[c] = known_line_mask(wavelength, str(c))
        return cls(np.asarray(wavelength, np.float64), med, tau2, masked)


def narrow_line_z(ref: NarrowLineReference, flux: np.ndarray, ivar: np.ndarray, spectype: np.ndarray,
                  z: np.ndarray, skip: tuple[str, ...] = ("QSO",)) -> np.ndarray:
    """Largest z (N,) of a narrow emission line against the spectrum's class, known and sky lines left out.

    Classes in ``skip`` (quasars: absorbers and forest structure make narrow peaks ordinary) and
    classes without a reference give NaN; so do spectra without a usable pixel.
    """
    a, e = narrow_amplitude(flux, ivar)
    wl = ref.wavelength
    out = np.full(a.shape[0], np.nan)
    obs = wl[None, :] * (1.0 + np.nan_to_num(np.asarray(z, np.float64))[:, None])
    sky = sky_line_mask(obs, SKY_LINES, halfwidth=4.0)
    for c in np.unique(spectype):
        if c in skip or c not in ref.median:
            continue
        m = spectype == c
        zz = (a[m] - ref.median[c][None, :]) / np.sqrt(e[m] ** 2 + ref.tau2[c][None, :])
        zz = np.where(ref.masked[c][None, :] | sky[m] | ~np.isfinite(zz), -np.inf, zz)
        best = zz.max(1)
        out[m] = np.where(np.isfinite(best), best, np.nan)
    return out
