"""Synthetic broadband photometry of sky spectra: V, g, r, z surface brightness in AB mag/arcsec².

The bands' transmission curves come from speclite (``speclite.filters``, maintained by the DESI
collaboration): ``bessell-V`` (Bessell 1990) and ``decam2014-g/r/z`` (DECam total throughput with
a 1.3-airmass atmosphere, the curves DESI's imaging surveys use). A spectrum ``f_lambda`` on a
wavelength grid gives the AB magnitude

    m = -2.5 log10( ∫ f_λ R(λ) λ dλ / ∫ f_AB(λ) R(λ) λ dλ ),   f_AB(λ) = 3631 Jy · c / λ²

(photon-counting detector). Sky spectra in ``1e-17 erg/s/cm²/Å/arcsec²`` give magnitudes per
square arcsecond. The DESI grid ends at 9824 Å while decam2014-z reaches 10 280 Å: the z band is
integrated over the part of the filter the spectrum covers (:func:`band_coverage` gives that part
of the filter's photon-weighted response, ~0.8 for z), i.e. the sky's mean AB level within the
covered part of the band. Pixels with ``ivar <= 0`` are bridged by linear interpolation from their
good neighbours before integrating.

Pure NumPy (no Dask/Zarr). Shapes: ``flux`` (n, nwave), ``wave`` (nwave,) in Å.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["SKY_BANDS", "BAND_FILTERS", "band_weights", "band_coverage", "sky_magnitudes", "FLUX_UNIT"]

SKY_BANDS: tuple[str, ...] = ("V", "g", "r", "z")
"""Band names, in the order of the magnitude arrays."""
BAND_FILTERS: dict[str, str] = {"V": "bessell-V", "g": "decam2014-g", "r": "decam2014-r", "z": "decam2014-z"}
"""speclite filter name of each band."""
FLUX_UNIT = 1e-17
"""erg/s/cm²/Å per unit of stored flux (the DESI convention)."""
_C_A_PER_S = 2.99792458e18
_AB_FNU = 3631e-23  # erg/s/cm²/Hz


@lru_cache(maxsize=8)
def _response(name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        from speclite.filters import load_filter
    except ImportError as err:  # pragma: no cover - speclite is a dependency
        raise ImportError("the sky models' photometry needs speclite: pip install speclite") from err
    f = load_filter(name)
    return np.asarray(f.wavelength, np.float64), np.asarray(f.response, np.float64)


def _trapz_weights(wave: np.ndarray) -> np.ndarray:
    dw = np.diff(wave)
    w = np.zeros_like(wave)
    w[:-1] += dw / 2
    w[1:] += dw / 2
    return w


def band_weights(wave: np.ndarray, bands: tuple[str, ...] = SKY_BANDS) -> np.ndarray:
    """Integration weights (nband, nwave): ``mag = -2.5 log10(weights @ f_lambda)`` for f in erg/s/cm²/Å.

    Each row is ``R(λ) λ Δλ / ∫ f_AB R λ dλ`` on the grid (trapezoid rule), the response
    interpolated from speclite's table (0 outside it).
    """
    wave = np.asarray(wave, np.float64)
    dl = _trapz_weights(wave)
    out = np.zeros((len(bands), wave.size))
    for i, b in enumerate(bands):
        if b not in BAND_FILTERS:
            raise ValueError(f"unknown band {b!r}; choose from {sorted(BAND_FILTERS)}")
        fw, fr = _response(BAND_FILTERS[b])
        r = np.interp(wave, fw, fr, left=0.0, right=0.0)
        if not np.any(r > 0):
            raise ValueError(f"band {b} ({BAND_FILTERS[b]}, {fw[0]:.0f}-{fw[-1]:.0f} Å) does not overlap the "
                             f"spectra's grid {wave[0]:.0f}-{wave[-1]:.0f} Å")
        num = r * wave * dl
        den = np.sum(_AB_FNU * _C_A_PER_S / wave**2 * r * wave * dl)
        out[i] = num / den
    return out


def band_coverage(wave: np.ndarray, bands: tuple[str, ...] = SKY_BANDS) -> dict[str, float]:
    """Fraction of each filter's photon-weighted response ``∫ R λ dλ`` inside the grid ``wave``."""
    wave = np.asarray(wave, np.float64)
    out = {}
    for b in bands:
        fw, fr = _response(BAND_FILTERS[b])
        full = np.trapezoid(fr * fw, fw)
        inside = (fw >= wave[0]) & (fw <= wave[-1])
        out[b] = float(np.trapezoid((fr * fw)[inside], fw[inside]) / full)
    return out


def _fill_bad(flux: np.ndarray, good: np.ndarray) -> np.ndarray:
    out = np.array(flux, np.float64, copy=True)
    idx = np.arange(flux.shape[1])
    for i in np.flatnonzero(~good.all(axis=1)):
        g = good[i]
        out[i] = np.interp(idx, idx[g], out[i, g]) if g.any() else np.nan
    return out


def sky_magnitudes(flux: np.ndarray, wave: np.ndarray, ivar: np.ndarray | None = None,
                   bands: tuple[str, ...] = SKY_BANDS, *, weights: np.ndarray | None = None) -> np.ndarray:
    """AB magnitudes (n, nband) of sky spectra ``flux`` (n, nwave) in 1e-17 erg/s/cm²/Å[/arcsec²].

    ``ivar`` (n, nwave): pixels with ivar <= 0 or non-finite flux are interpolated over; a spectrum
    without good pixels, or with no positive flux in a band, gets NaN for it. ``weights`` from
    :func:`band_weights` may be passed to skip recomputing them.
    """
    flux = np.atleast_2d(np.asarray(flux))
    good = np.isfinite(flux) if ivar is None else (np.asarray(ivar) > 0) & np.isfinite(flux)
    f = _fill_bad(np.where(good, flux, 0.0), good) * FLUX_UNIT
    w = band_weights(wave, bands) if weights is None else weights
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = f @ w.T
        return np.where(ratio > 0, -2.5 * np.log10(np.where(ratio > 0, ratio, 1.0)), np.nan)
