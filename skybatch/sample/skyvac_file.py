"""Write a DESI sky-spectra VAC file (``sky_spectra_vac_v1.fits`` layout) with known conditions.

HDUs (``formats.md`` §6): PRIMARY, WAVELENGTH (7781 f8, the 3600–9824 Å /
0.8 Å brz grid), FLUX (nspec × 7781 f4, 1e-17 erg/s/cm²/Å/arcsec²) and
METADATA (one row per spectrum: NIGHT, EXPID, TILEID, TILERA, TILEDEC, MJD,
EXPTIME, AIRMASS, EBV, SEEING_GFA, TRANSPARENCY_GFA, SKY_MAG_{G,R,Z}_SPEC,
MOONFRAC, MOONALT, MOONSEP, SUNALT, SUNSEP, OBSALT, OBSAZ, SOLFLUX,
ECLLON, ECLLAT, GALLON, GALLAT (the enriched columns desisky's models are
conditioned on), PROGRAM, and the generator's truth label CONDITION =
dark / moon / twilight / other).

The spectra follow the METADATA by construction (:func:`sky_components`):

* airglow: a smooth continuum plus emission lines ([O I] 5577, [O I]
  6300/6364, Na D, Hg, OH bands), scaled with airmass (AIRMASS = the secant of
  the zenith angle, 1 / sin OBSALT); the lines and the continuum brighten with
  the 10.7 cm solar flux SOLFLUX (sfu), and each line family varies from
  exposure to exposure (log-normal, 10–25 %), the way real airglow does —
  two exposures under the same conditions are not the same sky;
* zodiacal light (solar spectrum, brighter near the ecliptic: ECLLAT) and
  integrated starlight (brighter near the Galactic plane: GALLAT);
* scattered moonlight and twilight from
  :func:`skybatch.sample.sky_noise.sky_spectrum` (MOONFRAC, MOONALT, MOONSEP,
  SUNALT), the moonlight raised by thin cloud (low TRANSPARENCY_GFA);

plus 2 % pixel noise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .render import _add_gaussians
from .sky_noise import _OH_A, _OH_W, sky_spectrum

__all__ = ["write_skyvac", "SkyVacFile", "draw_sky_conditions", "sky_components", "AIRGLOW_GROUPS"]

#: Airglow line families (name -> list of (lo, hi) Å windows) that vary together in an exposure.
AIRGLOW_GROUPS: dict[str, list[tuple[float, float]]] = {
    "oi5577": [(5570.0, 5588.0)],
    "oi6300": [(6295.0, 6310.0), (6358.0, 6373.0)],
    "nad": [(5884.0, 5904.0)],
    "oh": [(6400.0, 10000.0)],
}
_GROUP_SIGMA = {"oi5577": 0.25, "oi6300": 0.25, "nad": 0.15, "oh": 0.10}
_GROUP_SOLAR = {"oi5577": 0.35, "oi6300": 0.5, "nad": 0.1, "oh": 0.15}  # brightening per 100 sfu


@dataclass
class SkyVacFile:
    """What :func:`write_skyvac` wrote: the path and the METADATA columns (native arrays)."""

    path: Path
    metadata: dict[str, np.ndarray]


def _sky_coordinates(ra: np.ndarray, dec: np.ndarray) -> dict[str, np.ndarray]:
    """Ecliptic (true of J2000, geocentric) and Galactic coordinates of (ra, dec) in degrees."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    c = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs")
    ecl = c.transform_to("geocentricmeanecliptic")
    gal = c.galactic
    return {"ECLLON": ecl.lon.deg, "ECLLAT": ecl.lat.deg, "GALLON": gal.l.deg, "GALLAT": gal.b.deg}


def draw_sky_conditions(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Observing conditions for ``n`` exposures, each drawn inside one desisky subset.

    About 45 % dark (SUNALT < -20, MOONALT < -5), 30 % moon (MOONALT > 5,
    MOONFRAC > 0.5, MOONSEP < 90), 15 % twilight (-20 < SUNALT < -12,
    MOONALT < -5, SUNSEP < 110) and 10 % in none of them (a half-lit moon
    near the horizon, or no transparency measurement: TRANSPARENCY_GFA = 0).
    The intended subset is returned as CONDITION. AIRMASS = 1 / sin(OBSALT);
    SOLFLUX (sfu) follows a slow solar-cycle rise over the NIGHTs; ECLLON,
    ECLLAT, GALLON, GALLAT are computed from TILERA / TILEDEC.
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
    obsalt = rng.uniform(30, 89, n)
    ra, dec = rng.uniform(0, 360, n), rng.uniform(-15, 75, n)
    solflux = 75.0 + 0.2 * (night - 20210514) + rng.normal(0, 12, n)
    meta: dict[str, np.ndarray] = {
        "NIGHT": night.astype(np.int32),
        "EXPID": (80000 + rng.permutation(20000)[:n]).astype(np.int32),
        "TILEID": rng.integers(1000, 40000, n).astype(np.int32),
        "TILERA": ra,
        "TILEDEC": dec,
        "MJD": 59348.0 + (night - 20210514) + rng.uniform(0.1, 0.4, n),
        "EXPTIME": rng.uniform(300, 1200, n).astype(np.float32),
        "AIRMASS": (1.0 / np.sin(np.radians(obsalt))).astype(np.float32),
        "EBV": rng.uniform(0.01, 0.1, n).astype(np.float32),
        "SEEING_GFA": rng.uniform(0.8, 2.0, n).astype(np.float32),
        "TRANSPARENCY_GFA": transp.astype(np.float32),
        "MOONFRAC": moonfrac.astype(np.float32),
        "MOONALT": moonalt.astype(np.float32),
        "MOONSEP": moonsep.astype(np.float32),
        "SUNALT": sunalt.astype(np.float32),
        "SUNSEP": sunsep.astype(np.float32),
        "OBSALT": obsalt.astype(np.float32),
        "OBSAZ": rng.uniform(0, 360, n).astype(np.float32),
        "SOLFLUX": np.clip(solflux, 60.0, None).astype(np.float32),
    }
    meta.update({k: v.astype(np.float32) for k, v in _sky_coordinates(ra, dec).items()})
    meta["PROGRAM"] = np.where(cond == "moon", "bright", "dark").astype(object)
    meta["CONDITION"] = cond
    return meta


def sky_components(wave: np.ndarray, meta: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Noise-free sky surface brightness by component, each (n, nwave) in 1e-17 erg/s/cm²/Å/arcsec².

    Keys: ``airglow_continuum``, ``airglow_lines``, ``zodiacal``, ``starlight``, ``moon``,
    ``twilight`` (sum them for the sky). ``meta`` holds the METADATA columns of
    :func:`draw_sky_conditions`; ``rng`` draws the exposure-to-exposure airglow variation.
    """
    wave = np.asarray(wave, np.float64)
    am = np.asarray(meta["AIRMASS"], np.float64)
    n = am.size
    sol = (np.asarray(meta["SOLFLUX"], np.float64) - 100.0) / 100.0
    ext = (0.8 + 0.25 * am)[:, None]
    cont = 0.35 + 0.65 * (wave / 6200.0) ** 1.5
    cont_scale = (1.0 + 0.2 * sol) * rng.lognormal(0.0, 0.05, n)
    lines = np.zeros((len(AIRGLOW_GROUPS) + 1, wave.size))
    _add_gaussians(lines[:1], wave, _OH_W, np.full(_OH_W.size, 0.7), _OH_A, rows=np.zeros(_OH_W.size, np.int64))
    all_lines = lines[0].copy()
    lines[0] = 0.0
    rest = np.ones(wave.size, bool)
    for k, windows in enumerate(AIRGLOW_GROUPS.values(), start=1):
        sel = np.zeros(wave.size, bool)
        for lo, hi in windows:
            sel |= (wave >= lo) & (wave <= hi)
        sel &= rest
        lines[k, sel] = all_lines[sel]
        rest &= ~sel
    lines[0, rest] = all_lines[rest]
    scale = [np.ones(n)]
    for name in AIRGLOW_GROUPS:
        scale.append(np.maximum(1.0 + _GROUP_SOLAR[name] * sol, 0.3) * rng.lognormal(0.0, _GROUP_SIGMA[name], n))
    line_sky = np.einsum("kn,kw->nw", np.array(scale), lines)
    lam_cm = wave * 1e-8
    solar = 1.0 / (lam_cm**5 * np.expm1(1.4388 / (lam_cm * 5800.0)))
    solar = solar / np.interp(6200.0, wave, solar)
    ecl = np.abs(np.asarray(meta["ECLLAT"], np.float64))
    gal = np.abs(np.asarray(meta["GALLAT"], np.float64))
    zodi = (0.1 + 0.6 * np.exp(-ecl / 20.0))[:, None] * solar[None, :]
    stars = (0.05 + 0.5 * np.exp(-gal / 10.0))[:, None] * solar[None, :] * (wave[None, :] / 6200.0) ** 0.5
    kw: dict[str, Any] = dict(moonsep=meta["MOONSEP"], airmass=am)
    base = sky_spectrum(wave, moonfrac=0.0, moonalt=-30.0, sunalt=-40.0, **kw)
    moon = sky_spectrum(wave, moonfrac=meta["MOONFRAC"], moonalt=meta["MOONALT"], sunalt=-40.0, **kw) - base
    twi = sky_spectrum(wave, moonfrac=0.0, moonalt=-30.0, sunalt=meta["SUNALT"], **kw) - base
    cloud = (1.0 + 0.8 * (1.0 - np.clip(np.asarray(meta["TRANSPARENCY_GFA"], np.float64), 0.0, 1.0)))[:, None]
    return {
        "airglow_continuum": cont[None, :] * cont_scale[:, None] * ext,
        "airglow_lines": line_sky * ext,
        "zodiacal": zodi,
        "starlight": stars,
        "moon": moon * cloud,
        "twilight": twi,
    }


def write_skyvac(path: str | os.PathLike, n: int, rng: np.random.Generator, *, nan_rows: int = 0) -> SkyVacFile:
    """Write a sky VAC with ``n`` spectra; ``nan_rows`` rows get a few NaN pixels."""
    from astropy.io import fits

    from skybatch.sample.desi_files import brz_wavelength

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = draw_sky_conditions(n, rng)
    wave = brz_wavelength()
    flux = sum(sky_components(wave, meta, rng).values())
    assert isinstance(flux, np.ndarray)  # a sum of (n, nwave) arrays, never the empty sum's 0
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
