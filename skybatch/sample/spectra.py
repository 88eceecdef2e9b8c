"""Physically sensible synthetic spectra with ground truth (vectorised NumPy).

A *population* is a dict of equal-length arrays (one entry per object):
class, true (rendered) redshift, catalogue redshift, r magnitude and the
class parameters. :func:`~skybatch.sample.render.render_spectra` turns a population into noise-free
flux on **any** observed wavelength grid (the same object rendered on the
DESI arms, the brz grid or an SDSS loglam grid gives the same physical
spectrum), and :func:`~skybatch.sample.sky_noise.add_noise` draws flux / ivar / mask from it.

Models (flux density f_λ in 1e-17 erg/s/cm²/Å, vacuum wavelengths):

* GALAXY (z 0.02–1.5): old population ``(λ/5500)^β`` with a 4000 Å break
  (smooth step of depth 0.25–0.6 in rest frame) mixed with a young blue
  ``λ^-2`` component; Ca H&K, G band, Mg b, Na D and Balmer absorption
  (stellar σ 150–250 km/s); for star-forming galaxies [OII], Hβ, [OIII],
  Hα, [NII], [SII] emission (σ 40–150 km/s) with random line ratios.
* QSO (z 0.5–3.0): power law f_λ ∝ λ^α (α ≈ -1.5 ± 0.3) with broad
  (FWHM 2500–7000 km/s) Lyβ/OVI, Lyα, NV, SiIV, CIV, HeII, CIII], MgII, Hγ,
  Hβ, Hα and narrow [OII], [NeV], [OIII]; a Lyα forest (random absorbers
  whose density grows with redshift) and a Lyman-limit drop blueward of
  912 Å rest.
* STAR (radial velocity ~ N(0, 80 km/s)): Planck f_λ at Teff 3300–10000 K, Balmer lines
  strongest near 9500 K, Ca H&K / Mg b / Na D / Ca triplet growing towards
  cool stars, TiO band troughs below 4200 K.

r magnitudes: galaxies 18.5–21.5, QSOs 18.5–21.3, stars 16–19.5 (uniform).

Anomalies (``anomaly_kind``), drawn from the brighter 60 % of their class's
magnitude range: ``bal`` (QSO at z 1.7–3 with broad absorption troughs
from 2000–6000 up to 10000–26000 km/s blueward of CIV, SiIV, NV, Lyα, and
for half of them AlIII and MgII, depth 0.75–0.98), ``strong_emission``
(three narrow lines at rest wavelengths matching no known line, each
15–40× the continuum level), ``wrong_z`` (a QSO or a strong emission-line
galaxy rendered at ``z_true`` but catalogued at a ``z`` off by >= 0.5 /
0.35; only visible once the spectrum is put in the catalogue rest frame)
and ``odd_continuum`` (the continuum multiplied by a 70 % sinusoidal
ripple of period 250–600 Å, or jumping 5× at a random wavelength).

More anomaly kinds (:data:`EXTRA_ANOMALY_KINDS`, used when passed in
``anomaly_kinds``), each scaled by a per-object ``anomaly_strength`` s
(drawn uniformly in the ``anomaly_strength`` range; 1 = the nominal
strength, also scaling the kinds above):
``qso_weak_lines`` (broad-line equivalent widths times exp(-1.5 s)),
``qso_strong_lines`` (times exp(+1.2 s)), ``seyfert2`` (an emission-line
galaxy with AGN line ratios: [OIII]/Hβ 6-12, [NII]/Hα 0.8-1.5, plus
[NeV] 3426, [NeIII] 3869, HeII 4686, [OI] 6300), ``star_galaxy`` (a galaxy
with a superposed foreground star carrying a fraction 0.3-0.6 s of the
6000-6400 Å flux), ``extreme_line_ratio`` (one line ratio of an emission-line
galaxy far outside the normal range: [OIII]/Hβ >> 10, Hα/Hβ < 2.86,
[NII]/Hα > 2 or [OII]/Hβ < 0.1), ``background_oii`` (an LRG without
emission lines plus the narrow [OII] doublet of a background galaxy at a
higher redshift) and ``narrow_line`` (one narrow emission line at a rest
wavelength matching no known line, 2-6 s times the continuum, in an object
of any class). ``anomaly_mag_fraction`` sets the part of each class's
magnitude range anomalies are drawn from (1 = brightness-matched).

Normal QSOs at z > 2 carry a random (realistic) Lyα forest, the largest
source of spectrum-to-spectrum variance in the sample: anomaly scores should
mask rest wavelengths below ~1230 Å or use a robust loss.

All functions are pure NumPy; nothing here does I/O.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CLASSES",
    "ANOMALY_KINDS",
    "EXTRA_ANOMALY_KINDS",
    "ALL_ANOMALY_KINDS",
    "C_KMS",
    "draw_population",
    "mag_to_flux_level",
]

C_KMS = 299792.458
CLASSES = ("GALAXY", "QSO", "STAR")
ANOMALY_KINDS = ("bal", "strong_emission", "wrong_z", "odd_continuum")
EXTRA_ANOMALY_KINDS = ("qso_weak_lines", "qso_strong_lines", "seyfert2", "star_galaxy", "extreme_line_ratio",
                       "background_oii", "narrow_line")
ALL_ANOMALY_KINDS = ANOMALY_KINDS + EXTRA_ANOMALY_KINDS
_QSO_KINDS = ("bal", "qso_weak_lines", "qso_strong_lines")
_GALAXY_KINDS = ("seyfert2", "star_galaxy", "extreme_line_ratio", "background_oii")

# Rest-frame vacuum wavelengths (Angstrom).
_GAL_EMISSION = {
    "OII3726": 3727.09, "OII3729": 3729.88, "HDELTA": 4102.89, "HGAMMA": 4341.69, "HBETA": 4862.68,
    "OIII4959": 4960.30, "OIII5007": 5008.24, "NII6548": 6549.86, "HALPHA": 6564.61, "NII6584": 6585.27,
    "SII6716": 6718.29, "SII6731": 6732.67,
}
_GAL_ABSORPTION = (  # (wavelength, relative depth)
    (3934.78, 0.9), (3969.59, 0.8), (4102.89, 0.3), (4305.6, 0.35), (4341.69, 0.25), (4862.68, 0.25),
    (5176.7, 0.4), (5270.0, 0.2), (5895.6, 0.35), (6564.61, 0.2),
)
_QSO_BROAD = (  # (wavelength, EW in Angstrom rest, FWHM multiplier)
    (1033.8, 12.0, 1.0), (1215.67, 90.0, 1.0), (1240.14, 20.0, 0.8), (1399.8, 10.0, 1.0), (1549.06, 40.0, 1.0),
    (1640.4, 5.0, 1.0), (1908.73, 22.0, 1.1), (2799.49, 32.0, 0.9), (4341.69, 12.0, 1.0), (4862.68, 45.0, 1.0),
    (6564.61, 180.0, 0.9),
)
_QSO_NARROW = ((3728.48, 3.0), (3426.84, 1.5), (5008.24, 15.0), (4960.30, 5.0))
_BALMER = (6564.61, 4862.68, 4341.69, 4102.89, 3971.19, 3890.15, 3836.47)
_STAR_METAL = ((3934.78, 1.0), (3969.59, 0.9), (4305.6, 0.4), (5176.7, 0.5), (5895.6, 0.6), (8500.36, 0.4), (8544.44, 0.5), (8664.52, 0.45))
_TIO_HEADS = (6159.0, 7054.0, 7589.0, 8432.0)
_KNOWN_LINES = np.array(sorted(set(list(_GAL_EMISSION.values()) + [w for w, *_ in _QSO_BROAD] + [w for w, _ in _QSO_NARROW]
                                   + [w for w, _ in _GAL_ABSORPTION] + list(_BALMER) + [w for w, _ in _STAR_METAL])))
_LYA = 1215.67
_REF_WAVE = np.arange(6000.0, 6400.0, 0.8)  # normalisation window (observed frame)


def mag_to_flux_level(mag_r: np.ndarray) -> np.ndarray:
    """Mean f_λ near 6200 Å (1e-17 erg/s/cm²/Å) of an AB magnitude ``mag_r``.

    f_ν = 3631 Jy · 10^(-0.4 m), f_λ = f_ν c / λ² at 6200 Å.
    """
    fnu = 3631e-23 * 10.0 ** (-0.4 * np.asarray(mag_r, dtype=np.float64))
    return fnu * 2.99792458e18 / 6200.0**2 / 1e-17


def draw_population(
    n: int,
    rng: np.random.Generator,
    *,
    class_fractions: tuple[float, float, float] = (0.55, 0.27, 0.18),
    anomaly_fraction: float = 0.01,
    zwarn_fraction: float = 0.03,
    first_kind: int = 0,
    anomaly_kinds: tuple[str, ...] = ANOMALY_KINDS,
    anomaly_strength: tuple[float, float] = (1.0, 1.0),
    anomaly_mag_fraction: float = 0.6,
) -> dict[str, np.ndarray]:
    """Draw ``n`` objects: class, redshifts, magnitudes, model parameters, anomalies.

    Returns a dict of arrays, each shape (n,):
    ``spectype`` (str), ``z_true`` (rendered redshift), ``z`` (catalogue
    redshift, = z_true except for ``wrong_z`` anomalies and small redrock
    errors), ``zerr``, ``zwarn`` (0, or 4 = SMALL_DELTA_CHI2 for about
    ``zwarn_fraction`` of normal objects), ``deltachi2``, ``subtype``,
    ``mag_r``, ``is_anomaly``, ``anomaly_kind`` ('' when normal) and the
    model parameters used by :func:`~skybatch.sample.render.render_spectra`.
    Anomaly kinds are assigned in turn (bal, strong_emission, wrong_z,
    odd_continuum, ...) starting at ``ANOMALY_KINDS[first_kind % 4]``, so
    every kind appears once there are at least four; pass the running
    number of anomalies as ``first_kind`` to keep the rotation going across
    several populations.

    ``anomaly_kinds`` is the rotation of kinds (any of :data:`ALL_ANOMALY_KINDS`);
    ``anomaly_strength`` the (lo, hi) range of the per-anomaly strength s
    (column ``anomaly_strength``; 1 = nominal); ``anomaly_mag_fraction`` the
    brighter part of each class's magnitude range anomalies are drawn from
    (1.0 = the same magnitudes as normal objects). The defaults reproduce the
    original populations draw for draw.
    """
    kinds_seq = tuple(anomaly_kinds)
    unknown = [k for k in kinds_seq if k not in ALL_ANOMALY_KINDS]
    if not kinds_seq or unknown:
        raise ValueError(f"anomaly_kinds: unknown kinds {unknown} (choose from {ALL_ANOMALY_KINDS})")
    if not 0.0 < anomaly_mag_fraction <= 1.0:
        raise ValueError(f"anomaly_mag_fraction must lie in (0, 1], got {anomaly_mag_fraction}")
    fr = np.asarray(class_fractions, dtype=float)
    fr = fr / fr.sum()
    cls = rng.choice(np.array(CLASSES, dtype=object), size=n, p=fr)
    n_anom = int(round(anomaly_fraction * n))
    if anomaly_fraction > 0 and n_anom == 0 and n >= 20:
        n_anom = 1
    kinds = np.full(n, "", dtype=object)
    anom_idx = rng.choice(n, size=n_anom, replace=False) if n_anom else np.zeros(0, dtype=int)
    for j, i in enumerate(anom_idx):
        kinds[i] = kinds_seq[(first_kind + j) % len(kinds_seq)]
    # BAL needs a QSO at z high enough for CIV troughs to be in the optical.
    cls[np.isin(kinds, _QSO_KINDS)] = "QSO"
    cls[np.isin(kinds, _GALAXY_KINDS)] = "GALAXY"
    # a wrong catalogue redshift is only meaningful (and visible) for objects
    # with strong lines: QSOs and emission-line galaxies
    cls[(kinds == "wrong_z") & (cls == "STAR")] = "QSO"
    is_gal, is_qso, is_star = cls == "GALAXY", cls == "QSO", cls == "STAR"
    p: dict[str, np.ndarray] = {"spectype": cls, "anomaly_kind": kinds, "is_anomaly": kinds != ""}

    z = np.zeros(n)
    z[is_gal] = np.where(rng.random(is_gal.sum()) < 0.5, rng.uniform(0.02, 0.6, is_gal.sum()), rng.uniform(0.6, 1.5, is_gal.sum()))
    z[is_qso] = rng.uniform(0.5, 3.0, is_qso.sum())
    z[kinds == "bal"] = rng.uniform(1.7, 3.0, (kinds == "bal").sum())
    z[is_star] = rng.normal(0.0, 80.0, is_star.sum()) / C_KMS
    p["z_true"] = z

    mag = np.empty(n)
    mag[is_gal] = rng.uniform(18.5, 21.5, is_gal.sum())
    mag[is_qso] = rng.uniform(18.5, 21.3, is_qso.sum())
    mag[is_star] = rng.uniform(16.0, 19.5, is_star.sum())
    # anomalies are drawn from the brighter 60 % of each class's magnitude range
    for c, lo, hi in (("GALAXY", 18.5, 21.5), ("QSO", 18.5, 21.3), ("STAR", 16.0, 19.5)):
        sel = (cls == c) & (kinds != "")
        mag[sel] = rng.uniform(lo, lo + anomaly_mag_fraction * (hi - lo), sel.sum())
    p["mag_r"] = mag

    # galaxy parameters
    p["g_young"] = np.where(is_gal, rng.beta(1.2, 1.6, n), 0.0)
    p["g_break"] = rng.uniform(0.25, 0.6, n)
    p["g_beta"] = rng.uniform(0.3, 1.5, n)
    sf = rng.random(n) < 0.35 + 0.6 * p["g_young"]
    p["g_ew_hb"] = np.where(is_gal & sf, rng.lognormal(np.log(6.0), 0.7, n) * (0.3 + 2 * p["g_young"]), 0.0)
    wz_gal = is_gal & (kinds == "wrong_z")
    p["g_ew_hb"][wz_gal] = rng.uniform(15.0, 40.0, wz_gal.sum())
    p["g_young"][wz_gal] = np.maximum(p["g_young"][wz_gal], 0.5)
    p["g_oiii_hb"] = rng.lognormal(np.log(1.2), 0.7, n)
    p["g_oii_hb"] = rng.lognormal(np.log(2.0), 0.4, n)
    p["g_ha_hb"] = rng.uniform(2.86, 5.0, n)
    p["g_nii_ha"] = rng.uniform(0.08, 0.5, n)
    p["g_sii_ha"] = rng.uniform(0.08, 0.2, n)
    p["g_sigma_gas"] = rng.uniform(40.0, 150.0, n)
    p["g_sigma_star"] = rng.uniform(150.0, 250.0, n)
    # QSO parameters
    p["q_alpha"] = rng.normal(-1.5, 0.3, n)
    p["q_fwhm"] = rng.uniform(2500.0, 7000.0, n)
    p["q_ew_scale"] = rng.lognormal(0.0, 0.3, n)
    p["q_forest_seed"] = rng.integers(0, 2**31 - 1, n)
    # star parameters
    teff = np.exp(rng.uniform(np.log(3300.0), np.log(10000.0), n))
    p["s_teff"] = teff
    # anomaly parameters
    p["bal_vmin"] = rng.uniform(2000.0, 6000.0, n)
    p["bal_vmax"] = p["bal_vmin"] + rng.uniform(8000.0, 20000.0, n)
    p["bal_depth"] = rng.uniform(0.75, 0.98, n)
    p["bal_lobal"] = rng.random(n) < 0.5
    xw = np.full((n, 3), np.nan)
    for i in np.flatnonzero(kinds == "strong_emission"):
        xw[i] = _unknown_rest_lines(rng, z[i])
    p["x_wave1"], p["x_wave2"], p["x_wave3"] = xw.T
    p["x_amp"] = rng.uniform(15.0, 40.0, n)
    p["odd_variant"] = rng.integers(0, 2, n)  # 0 ripple, 1 step
    p["odd_step_wave"] = rng.uniform(4500.0, 8500.0, n)
    p["odd_ripple_period"] = rng.uniform(250.0, 600.0, n)

    # catalogue redshift (what redrock reports)
    zerr = np.where(is_qso, 3e-4, np.where(is_star, 1e-5, 3e-5)) * (1 + np.abs(z))
    zcat = z + rng.normal(0.0, 1.0, n) * zerr
    zwarn = np.zeros(n, dtype=np.int64)
    dchi2 = np.where(is_star, rng.uniform(500, 5e4, n), rng.uniform(50, 5e3, n))
    normal = kinds == ""
    warn = normal & (rng.random(n) < zwarn_fraction)
    zwarn[warn] = 4
    dchi2[warn] = rng.uniform(0.5, 9.0, warn.sum())
    wz = kinds == "wrong_z"
    for i in np.flatnonzero(wz):
        zcat[i] = _wrong_redshift(rng, cls[i], z[i])
    p["z"] = zcat
    p["zerr"] = zerr
    p["zwarn"] = zwarn
    p["deltachi2"] = dchi2
    sub = np.full(n, "", dtype=object)
    sub[is_qso] = np.where(z[is_qso] > 1.6, "HIZ", "LOZ")
    star_types = np.array(["M", "K", "G", "F", "A", "B"], dtype=object)
    edges = np.array([3900.0, 5200.0, 6000.0, 7300.0, 10000.0])
    sub[is_star] = star_types[np.searchsorted(edges, teff[is_star])]
    p["subtype"] = sub
    p["anomaly_strength"] = np.where(kinds != "", 1.0, 0.0)
    if tuple(anomaly_strength) != (1.0, 1.0) or any(k in EXTRA_ANOMALY_KINDS for k in kinds_seq):
        from skybatch.sample.anomalies import draw_extra_anomalies

        draw_extra_anomalies(p, rng, anomaly_strength)
    return p


def _unknown_rest_lines(rng: np.random.Generator, z: float) -> np.ndarray:
    """Three rest wavelengths inside DESI/SDSS coverage, each >= 40 Å from any known line."""
    lo, hi = 3900.0 / (1 + max(z, 0.0)), 9300.0 / (1 + max(z, 0.0))
    out: list[float] = []
    while len(out) < 3:
        w = rng.uniform(lo, hi)
        if np.min(np.abs(_KNOWN_LINES - w)) > 40.0 and all(abs(w - o) > 100.0 for o in out):
            out.append(w)
    return np.array(out)


def _wrong_redshift(rng: np.random.Generator, cls: str, z: float) -> float:
    if cls == "QSO":
        lo, hi, dmin = 0.5, 3.0, 0.5
    else:
        lo, hi, dmin = 0.05, 1.5, 0.35
    while True:
        zc = rng.uniform(lo, hi)
        if abs(zc - z) >= dmin:
            return float(zc)
