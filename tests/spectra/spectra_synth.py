"""Synthetic spectra with known ground truth for the spectra tests."""

from __future__ import annotations

import numpy as np

DESI_WAVE = 3600.0 + 0.8 * np.arange(7781)  # the DESI brz grid (Å)


def gaussian_line_flux(wave: np.ndarray, centre: float, sigma: float, area: float) -> np.ndarray:
    """Flux density of a Gaussian line with integrated flux ``area`` (bin-averaged, exact)."""
    from math import erf, sqrt

    edges = np.empty(wave.size + 1)
    edges[1:-1] = 0.5 * (wave[1:] + wave[:-1])
    edges[0] = wave[0] - 0.5 * (wave[1] - wave[0])
    edges[-1] = wave[-1] + 0.5 * (wave[-1] - wave[-2])
    cdf = np.array([0.5 * (1 + erf((e - centre) / (sqrt(2) * sigma))) for e in edges])
    return area * np.diff(cdf) / np.diff(edges)


def smooth_spectra(rng: np.random.Generator, wave: np.ndarray, n: int) -> np.ndarray:
    """Smooth, well-sampled positive spectra (continuum + broad lines), float64 (n, nwave)."""
    x = (wave - wave.mean()) / np.ptp(wave)
    out = np.empty((n, wave.size))
    for i in range(n):
        cont = 5 + 2 * x * rng.normal() + x**2 * rng.normal()
        line = sum(
            gaussian_line_flux(wave, rng.uniform(wave[50], wave[-50]), rng.uniform(8, 30), rng.uniform(20, 200))
            for _ in range(3)
        )
        out[i] = cont + line
    return out


def random_grid(rng: np.random.Generator, start: float, n: int, lo: float, hi: float) -> np.ndarray:
    """Strictly increasing grid with random pixel widths in [lo, hi] Å."""
    return start + np.cumsum(rng.uniform(lo, hi, n))
