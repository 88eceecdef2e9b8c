"""Masking of strong night-sky emission lines (observed frame).

The list holds the strongest lines in the DESI/SDSS range: [O I] 5577, Na I D
(5890/5896), [O I] 6300/6364, Hg I (light pollution), and the brightest OH
Meinel-band lines. Air wavelengths are from the sky atlas of Osterbrock et al.
(1996, PASP 108, 277; rounded to 0.01 Å) and are converted to vacuum (DESI and
SDSS wavelengths are vacuum) with the IAU standard formula (Morton 2000, as
used by VALD). Centres are good to ~0.1 Å, ample for masking ±a few Å.

Mask sky lines **before** moving to the rest frame: they sit at fixed observed
wavelengths.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from skybatch.spectra.mask import SKYLINE
from skybatch.xp import get_namespace

__all__ = ["SKY_LINES_AIR", "SKY_LINES_VACUUM", "air_to_vacuum", "sky_line_mask", "mask_sky_lines"]

#: Strong sky lines, name → air wavelength (Å).
SKY_LINES_AIR: Mapping[str, float] = MappingProxyType(
    {
        "HgI 4358": 4358.34,
        "HgI 5461": 5460.74,
        "[OI] 5577": 5577.34,
        "NaI 5890": 5889.95,
        "NaI 5896": 5895.92,
        "[OI] 6300": 6300.30,
        "[OI] 6364": 6363.78,
        "OH 6864": 6863.96,
        "OH 7276": 7276.41,
        "OH 7316": 7316.28,
        "OH 7341": 7340.89,
        "OH 7751": 7750.64,
        "OH 7794": 7794.11,
        "OH 7822": 7821.50,
        "OH 7914": 7913.71,
        "OH 7993": 7993.33,
        "OH 8345": 8344.60,
        "OH 8399": 8399.17,
        "OH 8430": 8430.17,
        "OH 8761": 8761.31,
        "OH 8827": 8827.10,
        "OH 8886": 8885.85,
        "OH 8943": 8943.40,
    }
)


def air_to_vacuum(wave_air: float) -> float:
    """Air → vacuum wavelength (Å), IAU standard (Morton 2000; VALD form), valid > 2000 Å."""
    s2 = (1e4 / wave_air) ** 2
    n = 1.0 + 8.336624212083e-5 + 2.408926869968e-2 / (130.1065924522 - s2) + 1.599740894897e-4 / (38.92568793293 - s2)
    return wave_air * n


#: The same lines at vacuum wavelengths (Å): what DESI and SDSS spectra use.
SKY_LINES_VACUUM: Mapping[str, float] = MappingProxyType({k: air_to_vacuum(v) for k, v in SKY_LINES_AIR.items()})


def sky_line_mask(wavelength: Any, lines: Iterable[float] | None = None, halfwidth: float = 3.0) -> Any:
    """Boolean array, same shape as ``wavelength``: within ±``halfwidth`` Å of a line.

    Parameters
    ----------
    wavelength : array (n_wave,) or (n_spectrum, n_wave), Å, observed frame, vacuum
    lines : iterable of float, Å (default: :data:`SKY_LINES_VACUUM`)
    halfwidth : float, Å (> 0)
    """
    if not halfwidth > 0:
        raise ValueError(f"sky_line_mask: halfwidth must be > 0 Å, got {halfwidth!r}")
    xp = get_namespace(wavelength)
    w = xp.astype(wavelength, xp.float64)
    centres = list(SKY_LINES_VACUUM.values()) if lines is None else [float(v) for v in lines]
    hit = xp.zeros(w.shape, dtype=xp.bool)
    for c in centres:
        hit = hit | (xp.abs(w - c) <= halfwidth)
    return hit


def mask_sky_lines(
    flux: Any,
    ivar: Any,
    mask: Any | None,
    wavelength: Any,
    *,
    lines: Iterable[float] | None = None,
    halfwidth: float = 3.0,
):
    """Set ``flux = ivar = 0`` and the :data:`~skybatch.spectra.mask.SKYLINE` bit near sky lines.

    Parameters
    ----------
    flux, ivar : arrays (n_spectrum, n_wave)
    mask : uint32 array (n_spectrum, n_wave) or None
    wavelength : array (n_wave,) or (n_spectrum, n_wave), Å, observed frame
    lines, halfwidth : see :func:`sky_line_mask`

    Returns
    -------
    flux, ivar, mask (uint32)
    """
    xp = get_namespace(flux, ivar, mask, wavelength)
    hit = sky_line_mask(wavelength, lines, halfwidth)
    if hit.ndim == 1:
        hit = hit[None, :]
    if mask is None:
        mask = xp.zeros(flux.shape, dtype=xp.uint32)
    elif mask.dtype != xp.uint32:
        mask = xp.astype(mask, xp.uint32)
    flux = xp.where(hit, xp.asarray(0, dtype=flux.dtype), flux)
    ivar = xp.where(hit, xp.asarray(0, dtype=ivar.dtype), ivar)
    mask = mask | xp.where(hit, xp.asarray(SKYLINE, dtype=xp.uint32), xp.asarray(0, dtype=xp.uint32))
    return flux, ivar, mask
