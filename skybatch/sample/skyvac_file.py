"""Write a DESI sky-spectra VAC file (``sky_spectra_vac_v1.fits`` layout) with known conditions.

HDUs (``formats.md`` §6): PRIMARY, WAVELENGTH (7781 f8, the 3600–9824 Å /
0.8 Å brz grid), FLUX (nspec × 7781 f4, 1e-17 erg/s/cm²/Å/arcsec²) and
METADATA (one row per spectrum: NIGHT, EXPID, TILEID, TILERA, TILEDEC, MJD,
EXPTIME, AIRMASS, EBV, SEEING_GFA, TRANSPARENCY_GFA, SKY_MAG_{G,R,Z}_SPEC,
MOONFRAC, MOONALT, MOONSEP, SUNALT, SUNSEP, OBSALT, OBSAZ, PROGRAM, and
the generator's truth label CONDITION = dark / moon / twilight / other).

Spectra come from :func:`skybatch.sample.spectra.sky_spectrum`: airglow
lines and continuum, plus moonlight and twilight that follow the METADATA
angles, plus 2 % noise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .spectra import sky_spectrum

__all__ = ["write_skyvac", "SkyVacFile", "draw_sky_conditions"]


@dataclass
class SkyVacFile:
    """What :func:`write_skyvac` wrote: the path and the METADATA columns (native arrays)."""

    path: Path
    metadata: dict[str, np.ndarray]


def draw_sky_conditions(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Observing conditions for ``n`` exposures, each drawn inside one desisky subset.

    About 45 % dark (SUNALT < -20, MOONALT < -5), 30 % moon (MOONALT > 5,
    MOONFRAC > 0.5, MOONSEP < 90), 15 % twilight (-20 < SUNALT < -12,
    MOONALT < -5, SUNSEP < 110) and 10 % in none of them (a half-lit moon
    near the horizon, or no transparency measurement: TRANSPARENCY_GFA = 0).
    The intended subset is returned as CONDITION.
    """
    cond = rng.choice(np.array(["dark", "moon", "twilight", "other"], dtype=object), size=n, p=[0.45, 0.30, 0.15, 0.10])
    sunalt = rng.uniform(-60, -22, n)
    moonalt = rng.uniform(-60, -7, n)
    moonfrac = rng.uniform(0.0, 1.0, n)
    moonsep = rng.uniform(20, 170, n)
    sunsep = rng.uniform(60, 170, n)
    transp = rng.uniform(0.5, 1.0, n)
    m = cond == "moon"
    moonalt[m] = rng.uniform(7, 70, m.sum())
    moonfrac[m] = rng.uniform(0.55, 1.0, m.sum())
    moonsep[m] = rng.uniform(20, 88, m.sum())
    t = cond == "twilight"
    sunalt[t] = rng.uniform(-19, -12, t.sum())
    sunsep[t] = rng.uniform(60, 108, t.sum())
    o = cond == "other"
    half = o & (rng.random(n) < 0.5)
    moonalt[half] = rng.uniform(0, 4, half.sum())
    moonfrac[half] = rng.uniform(0.1, 0.4, half.sum())
    transp[o & ~half] = 0.0
    night = 20210514 + np.sort(rng.integers(0, 400, n))
    return {
        "NIGHT": night.astype(np.int32),
        "EXPID": (80000 + rng.permutation(20000)[:n]).astype(np.int32),
        "TILEID": rng.integers(1000, 40000, n).astype(np.int32),
        "TILERA": rng.uniform(0, 360, n),
        "TILEDEC": rng.uniform(-15, 75, n),
        "MJD": 59348.0 + (night - 20210514) + rng.uniform(0.1, 0.4, n),
        "EXPTIME": rng.uniform(300, 1200, n).astype(np.float32),
        "AIRMASS": rng.uniform(1.0, 2.0, n).astype(np.float32),
        "EBV": rng.uniform(0.01, 0.1, n).astype(np.float32),
        "SEEING_GFA": rng.uniform(0.8, 2.0, n).astype(np.float32),
        "TRANSPARENCY_GFA": transp.astype(np.float32),
        "MOONFRAC": moonfrac.astype(np.float32),
        "MOONALT": moonalt.astype(np.float32),
        "MOONSEP": moonsep.astype(np.float32),
        "SUNALT": sunalt.astype(np.float32),
        "SUNSEP": sunsep.astype(np.float32),
        "OBSALT": rng.uniform(30, 89, n).astype(np.float32),
        "OBSAZ": rng.uniform(0, 360, n).astype(np.float32),
        "PROGRAM": np.where(cond == "moon", "bright", "dark").astype(object),
        "CONDITION": cond,
    }


def write_skyvac(path: str | os.PathLike, n: int, rng: np.random.Generator, *, nan_rows: int = 0) -> SkyVacFile:
    """Write a sky VAC with ``n`` spectra; ``nan_rows`` rows get a few NaN pixels."""
    from astropy.io import fits

    from skybatch.sample.desi_files import brz_wavelength

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = draw_sky_conditions(n, rng)
    wave = brz_wavelength()
    flux = sky_spectrum(
        wave, moonfrac=meta["MOONFRAC"], moonalt=meta["MOONALT"], moonsep=meta["MOONSEP"],
        sunalt=meta["SUNALT"], airmass=meta["AIRMASS"],
    )
    flux = (flux * (1.0 + 0.02 * rng.standard_normal(flux.shape))).astype(np.float32)
    for i in rng.choice(n, size=min(nan_rows, n), replace=False) if nan_rows else []:
        flux[i, rng.integers(0, wave.size, 5)] = np.nan
    for band, (lo, hi) in (("G", (4000, 5500)), ("R", (5600, 7200)), ("Z", (8300, 9800))):
        sel = (wave >= lo) & (wave <= hi)
        level = np.nanmean(flux[:, sel], axis=1) * 1e-17 * ((lo + hi) / 2) ** 2 / 2.99792458e18
        meta[f"SKY_MAG_{band}_SPEC"] = (-2.5 * np.log10(np.maximum(level, 1e-40) / 3631e-23)).astype(np.float32)
    cols = []
    for name, v in meta.items():
        if v.dtype == object:
            width = max(1, max(len(s) for s in v))
            cols.append(fits.Column(name, f"{width}A", array=np.array([str(s) for s in v])))
        else:
            cols.append(fits.Column(name, {"int32": "J", "float32": "E", "float64": "D"}[v.dtype.name], array=v))
    hdus = [
        fits.PrimaryHDU(),
        fits.ImageHDU(wave, name="WAVELENGTH"),
        fits.ImageHDU(flux, name="FLUX"),
        fits.BinTableHDU.from_columns(cols, name="METADATA"),
    ]
    hdus[1].header["BUNIT"] = "Angstrom"
    hdus[2].header["BUNIT"] = "10**-17 erg/(s cm2 Angstrom arcsec2)"
    fits.HDUList(hdus).writeto(path, overwrite=True, checksum=True)
    return SkyVacFile(path=path, metadata=meta)
