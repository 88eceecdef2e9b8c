"""Physically sensible synthetic spectra with ground truth (vectorised NumPy).

A *population* is a dict of equal-length arrays (one entry per object):
class, true (rendered) redshift, catalogue redshift, r magnitude and the
class parameters. :func:`render_spectra` turns a population into noise-free
flux on **any** observed wavelength grid (the same object rendered on the
DESI arms, the brz grid or an SDSS loglam grid gives the same physical
spectrum), and :func:`add_noise` draws flux / ivar / mask from it.

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
    "render_spectra",
    "noise_sigma",
    "add_noise",
    "sky_spectrum",
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
    model parameters used by :func:`render_spectra`.
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
    out = []
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


# --------------------------------------------------------------------------- rendering
def _add_gaussians(
    out: np.ndarray, wave: np.ndarray, centre: np.ndarray, sigma: np.ndarray, amp: np.ndarray, rows: np.ndarray | None = None
) -> None:
    """out[rows[k]] += amp[k] * exp(-0.5 ((wave - centre[k]) / sigma[k])^2), within ±6σ only.

    rows: target row of each Gaussian (default: Gaussian k goes to row k).
    """
    rows = np.arange(centre.size) if rows is None else np.asarray(rows)
    ok = (amp != 0) & np.isfinite(centre) & (sigma > 0) & (centre + 6 * sigma > wave[0]) & (centre - 6 * sigma < wave[-1])
    if not ok.any():
        return
    rows = rows[ok]
    c, s, a = centre[ok], sigma[ok], amp[ok]
    dw = np.diff(wave)
    ci = np.clip(np.searchsorted(wave, c), 1, wave.size - 1)
    half = int(np.ceil(np.max(6 * s / dw[ci - 1]))) + 1
    half = min(half, wave.size)
    offs = np.arange(-half, half + 1)
    idx = ci[:, None] + offs[None, :]
    valid = (idx >= 0) & (idx < wave.size)
    idxc = np.clip(idx, 0, wave.size - 1)
    x = (wave[idxc] - c[:, None]) / s[:, None]
    vals = np.where(valid, a[:, None] * np.exp(-0.5 * x * x), 0.0)
    np.add.at(out, (np.broadcast_to(rows[:, None], idx.shape), idxc), vals)


def _galaxy(wave: np.ndarray, p: dict[str, np.ndarray], z: np.ndarray, lsf: np.ndarray) -> np.ndarray:
    n = z.size
    rest = wave[None, :] / (1 + z[:, None])
    beta, brk, young = p["g_beta"][:, None], p["g_break"][:, None], p["g_young"][:, None]
    old = (rest / 5500.0) ** beta * (1.0 - brk / (1.0 + np.exp((rest - 4000.0) / 35.0)))
    yng = (rest / 5500.0) ** -2.0 * (1.0 - 0.15 / (1.0 + np.exp((rest - 3650.0) / 30.0)))
    cont = (1 - young) * old + young * yng * 0.8
    # stellar absorption
    absorb = np.zeros((n, wave.size))
    sig_star = p["g_sigma_star"]
    for w0, depth in _GAL_ABSORPTION:
        c = w0 * (1 + z)
        s = np.hypot(c * sig_star / C_KMS, lsf)
        _add_gaussians(absorb, wave, c, s, 0.35 * depth * (1 - p["g_young"] * 0.7))
    flux = cont * np.clip(1.0 - absorb, 0.0, None)
    # emission: flux of each line relative to the continuum level at Hβ
    ew_hb = p["g_ew_hb"]
    if np.any(ew_hb > 0):
        c_hb = (1 - p["g_young"]) * (4862.68 / 5500.0) ** p["g_beta"] + p["g_young"] * (4862.68 / 5500.0) ** -2.0 * 0.8
        f_hb = ew_hb * c_hb
        ha = p["g_ha_hb"]
        ratios = {
            "OII3726": p["g_oii_hb"] * 0.45, "OII3729": p["g_oii_hb"] * 0.55, "HDELTA": 0.26 * np.ones(n),
            "HGAMMA": 0.47 * np.ones(n), "HBETA": np.ones(n), "OIII4959": p["g_oiii_hb"] / 2.98, "OIII5007": p["g_oiii_hb"],
            "NII6548": ha * p["g_nii_ha"] / 3.0, "HALPHA": ha, "NII6584": ha * p["g_nii_ha"],
            "SII6716": ha * p["g_sii_ha"], "SII6731": ha * p["g_sii_ha"] * 0.75,
        }
        emis = np.zeros((n, wave.size))
        for name, w0 in _GAL_EMISSION.items():
            c = w0 * (1 + z)
            s_rest = w0 * p["g_sigma_gas"] / C_KMS
            s = np.hypot(s_rest * (1 + z), lsf)
            total = f_hb * ratios[name] * (1 + z)  # line flux scales with (1+z) in observed Å
            _add_gaussians(emis, wave, c, s, total / (np.sqrt(2 * np.pi) * s))
        flux = flux + emis
    return flux


def _qso(wave: np.ndarray, p: dict[str, np.ndarray], z: np.ndarray, lsf: np.ndarray) -> np.ndarray:
    n = z.size
    rest = wave[None, :] / (1 + z[:, None])
    alpha = p["q_alpha"][:, None]
    cont = (rest / 2000.0) ** alpha
    lines = np.zeros((n, wave.size))
    sig_v = p["q_fwhm"] / 2.3548
    for w0, ew, fw in _QSO_BROAD:
        c = w0 * (1 + z)
        s = np.hypot(w0 * sig_v * fw / C_KMS * (1 + z), lsf)
        cont_at = (w0 / 2000.0) ** p["q_alpha"]
        total = ew * p["q_ew_scale"] * cont_at * (1 + z)
        _add_gaussians(lines, wave, c, s, total / (np.sqrt(2 * np.pi) * s))
    for w0, ew in _QSO_NARROW:
        c = w0 * (1 + z)
        s = np.hypot(w0 * 300.0 / C_KMS * (1 + z), lsf)
        cont_at = (w0 / 2000.0) ** p["q_alpha"]
        _add_gaussians(lines, wave, c, s, ew * cont_at * (1 + z) / (np.sqrt(2 * np.pi) * s))
    flux = cont + lines
    # Lyman limit and Lyα forest (only where 1215.67 (1+z) is inside the grid)
    flux = np.where(rest < 912.0, flux * 0.15, flux)
    for i in np.flatnonzero(_LYA * (1 + z) > wave[0] + 5):
        flux[i] *= _forest_transmission(wave, float(z[i]), int(p["q_forest_seed"][i]), float(lsf[i]))
    return flux


def _forest_transmission(wave: np.ndarray, z: float, seed: int, lsf: float) -> np.ndarray:
    """Lyα-forest transmission: random absorbers with density rising as (1+z_abs)^2.5."""
    rng = np.random.default_rng(seed)
    # absorbers depend on (z, seed) only, never on the grid
    lo, hi = max(3000.0, 912.0 * (1 + z)), _LYA * (1 + z)
    if hi <= lo:
        return np.ones(wave.size)
    n_abs = int(rng.poisson(0.12 * (hi - lo) * ((1 + z) / 3.0) ** 2.5))
    if n_abs == 0:
        return np.ones(wave.size)
    centres = rng.uniform(lo, hi, n_abs)
    tau0 = np.minimum(rng.lognormal(-0.7, 1.0, n_abs), 6.0)
    sig = np.hypot(rng.uniform(0.25, 0.6, n_abs), lsf)
    tau = np.zeros((1, wave.size))
    _add_gaussians(tau, wave, centres, sig, tau0, rows=np.zeros(n_abs, dtype=np.int64))
    return np.exp(-tau[0])


def _star(wave: np.ndarray, p: dict[str, np.ndarray], z: np.ndarray, lsf: np.ndarray) -> np.ndarray:
    n = z.size
    teff = p["s_teff"][:, None]
    rest = wave[None, :] / (1 + z[:, None])
    lam_cm = rest * 1e-8
    x = np.minimum(1.4388 / (lam_cm * teff), 700.0)
    planck = 1.0 / (lam_cm**5 * np.expm1(x))
    ref_cm = 5500e-8  # scale by the value at 5500 Å: grid-independent
    planck /= 1.0 / (ref_cm**5 * np.expm1(1.4388 / (ref_cm * teff)))
    absorb = np.zeros((n, wave.size))
    t = p["s_teff"]
    balmer = 0.55 * np.exp(-(((t - 9500.0) / 2600.0) ** 2))
    metal = 0.5 * np.clip((7200.0 - t) / 3000.0, 0.05, 1.0)
    for k, w0 in enumerate(_BALMER):
        c = w0 * (1 + z)
        s = np.hypot(np.full(n, 6.0 if k < 3 else 4.0) * (1 + 0.5 * (t > 7000)), lsf)
        _add_gaussians(absorb, wave, c, s, balmer * (1.0 if k < 4 else 0.7))
    for w0, d in _STAR_METAL:
        c = w0 * (1 + z)
        s = np.hypot(np.full(n, 2.5), lsf)
        _add_gaussians(absorb, wave, c, s, metal * d * 0.6)
    flux = planck * np.clip(1.0 - absorb, 0.02, None)
    tio = np.clip((4200.0 - t) / 900.0, 0.0, 0.75)[:, None]
    if np.any(tio > 0):
        for head in _TIO_HEADS:
            d = rest - head
            trough = np.exp(-np.clip(d, 0.0, None) / 120.0) * np.exp(np.clip(d, None, 0.0) / 4.0)
            flux = flux * (1.0 - tio * trough)
    return flux


def _apply_anomalies(wave: np.ndarray, flux: np.ndarray, p: dict[str, np.ndarray], z: np.ndarray, lsf: np.ndarray) -> np.ndarray:
    kinds = p["anomaly_kind"]
    rest = wave[None, :] / (1 + z[:, None])
    bal = kinds == "bal"
    if bal.any():
        trans = np.ones((bal.sum(), wave.size))
        r = rest[bal]
        vmin, vmax, depth = p["bal_vmin"][bal, None], p["bal_vmax"][bal, None], p["bal_depth"][bal, None]
        lines = [1549.06, 1399.8, 1240.14, _LYA]
        for j, w0 in enumerate(lines + [1857.4, 2799.49]):
            v = (1.0 - r / w0) * C_KMS  # outflow velocity of absorbing gas
            edge = 1.0 / (1.0 + np.exp(np.clip(-(v - vmin) / 400.0, -60, 60))) / (1.0 + np.exp(np.clip((v - vmax) / 400.0, -60, 60)))
            use = np.ones_like(depth) if j < len(lines) else p["bal_lobal"][bal, None].astype(float)
            trans *= 1.0 - depth * edge * use * (0.8 if w0 != 1549.06 else 1.0)
        flux[bal] = flux[bal] * np.clip(trans, 0.02, 1.0)
    se = kinds == "strong_emission"
    if se.any():
        level = np.ones(se.sum())  # the flux is normalised to ~1 in 6000-6400 Å here
        add = np.zeros((se.sum(), wave.size))
        for k in ("x_wave1", "x_wave2", "x_wave3"):
            c = p[k][se] * (1 + z[se])
            s = np.hypot(np.full(c.size, 2.5), lsf[se])
            _add_gaussians(add, wave, c, s, p["x_amp"][se] * level)
        flux[se] = flux[se] + add
    oc = kinds == "odd_continuum"
    if oc.any():
        rows = np.flatnonzero(oc)
        for i in rows:
            if p["odd_variant"][i] == 0:
                flux[i] = flux[i] * (1.0 + 0.7 * np.sin(2 * np.pi * wave / p["odd_ripple_period"][i]))
            else:
                flux[i] = flux[i] * np.where(wave > p["odd_step_wave"][i], 5.0, 1.0)
    if "sg_frac" in p:
        from skybatch.sample.anomalies import apply_extra_anomalies

        flux = apply_extra_anomalies(wave, flux, p, z, lsf)
    return flux


def _unnormalised(wave: np.ndarray, p: dict[str, np.ndarray], lsf: np.ndarray) -> np.ndarray:
    """Class models of normal objects (no anomaly applied), arbitrary scale."""
    n = p["z_true"].size
    out = np.zeros((n, wave.size))
    z = p["z_true"]
    for name, fn in (("GALAXY", _galaxy), ("QSO", _qso), ("STAR", _star)):
        sel = p["spectype"] == name
        if sel.any():
            sub = {k: v[sel] for k, v in p.items()}
            out[sel] = fn(wave, sub, z[sel], lsf[sel])
    return out


def render_spectra(
    wave: np.ndarray,
    population: dict[str, np.ndarray],
    *,
    lsf_sigma: float | np.ndarray = 0.7,
    lsf_velocity: float | None = None,
    batch: int = 256,
) -> np.ndarray:
    """Noise-free flux of every object on the observed wavelength grid ``wave``.

    Parameters
    ----------
    wave: observed vacuum wavelengths, Angstrom, increasing, shape (nwave,).
    population: from :func:`draw_population`.
    lsf_sigma: instrumental Gaussian sigma in Angstrom (DESI ≈ 0.7 Å).
    lsf_velocity: if given, the instrumental sigma in km/s instead
        (SDSS/BOSS ≈ 69 km/s); evaluated at 6000 Å.
    batch: objects rendered at a time (bounds memory to ~batch × nwave × 8 B × 4).

    Returns
    -------
    float32 (n, nwave) in 1e-17 erg/s/cm²/Å, scaled so that the mean over
    6000–6400 Å of the *normal* spectrum equals the flux of the object's
    ``mag_r``; anomalies are applied after that scaling.
    """
    wave = np.asarray(wave, dtype=np.float64)
    n = population["z_true"].size
    lsf = float(6000.0 * lsf_velocity / C_KMS) if lsf_velocity is not None else lsf_sigma
    lsf_arr = np.broadcast_to(np.asarray(lsf, dtype=np.float64), (n,))
    out = np.empty((n, wave.size), dtype=np.float32)
    level = mag_to_flux_level(population["mag_r"])
    for a in range(0, n, batch):
        b = min(n, a + batch)
        sub = {k: v[a:b] for k, v in population.items()}
        model = _unnormalised(wave, sub, lsf_arr[a:b])
        ref = _unnormalised(_REF_WAVE, sub, lsf_arr[a:b])
        norm = np.mean(ref, axis=1)
        norm = np.where(np.abs(norm) > 1e-30, norm, 1.0)
        model = _apply_anomalies(wave, model / norm[:, None], sub, sub["z_true"], lsf_arr[a:b])
        out[a:b] = (model * level[a:b, None]).astype(np.float32)
    return out


# --------------------------------------------------------------------------- sky and noise
def _oh_lines() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20240601)
    w = np.concatenate([rng.uniform(6200, 7000, 25), rng.uniform(7000, 9900, 160)])
    a = rng.lognormal(np.log(6.0), 0.9, w.size) * np.where(w > 8000, 1.6, 1.0)
    fixed_w = np.array([5578.9, 6302.0, 6365.5, 5891.6, 5897.6, 4359.6, 5462.3, 8400.0, 8430.0])
    fixed_a = np.array([60.0, 25.0, 8.0, 10.0, 8.0, 3.0, 4.0, 12.0, 12.0])
    return np.concatenate([w, fixed_w]), np.concatenate([a, fixed_a])


_OH_W, _OH_A = _oh_lines()


def sky_spectrum(
    wave: np.ndarray,
    *,
    moonfrac: np.ndarray | float = 0.0,
    moonalt: np.ndarray | float = -30.0,
    moonsep: np.ndarray | float = 90.0,
    sunalt: np.ndarray | float = -40.0,
    airmass: np.ndarray | float = 1.2,
    lsf_sigma: float = 0.7,
) -> np.ndarray:
    """Night-sky surface brightness, 1e-17 erg/s/cm²/Å/arcsec², shape (n, nwave).

    Airglow continuum (~1 at 6200 Å) and emission lines ([OI] 5577/6300/6364,
    Na D, Hg, OH bands in the red), scaled by airmass; plus scattered moonlight
    (a 5800 K solar spectrum reddened less than Rayleigh-blue, brighter with
    MOONFRAC, higher MOONALT and smaller MOONSEP) and twilight (blue scattered
    sunlight rising steeply for SUNALT > -20°). Angles in degrees; the
    condition arguments broadcast to (n,).
    """
    wave = np.asarray(wave, dtype=np.float64)
    mf, ma, ms, sa, am = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (moonfrac, moonalt, moonsep, sunalt, airmass)))
    n = mf.size
    cont = 0.35 + 0.65 * (wave / 6200.0) ** 1.5
    acc = np.zeros((1, wave.size))
    _add_gaussians(acc, wave, _OH_W, np.full(_OH_W.size, lsf_sigma), _OH_A, rows=np.zeros(_OH_W.size, dtype=np.int64))
    lines = acc[0]
    airglow = (cont + lines)[None, :] * (0.8 + 0.25 * am[:, None])
    lam_cm = wave * 1e-8
    solar = 1.0 / (lam_cm**5 * np.expm1(1.4388 / (lam_cm * 5800.0)))
    solar = solar / np.interp(6200.0, wave, solar) if wave[0] <= 6200.0 <= wave[-1] else solar / solar.mean()
    moon_amp = np.where(ma > 0, 8.0 * mf**2 * np.sin(np.radians(np.clip(ma, 0, 90))) * (1.0 + 40.0 / np.maximum(ms, 5.0)), 0.0)
    moon = moon_amp[:, None] * solar[None, :] * (wave[None, :] / 6200.0) ** -1.0
    twi_amp = np.where(sa > -20.0, 10.0 ** ((sa + 20.0) * 0.3), 0.0)
    twi = twi_amp[:, None] * solar[None, :] * (wave[None, :] / 6200.0) ** -4.0
    assert airglow.shape[0] == n
    return airglow + moon + twi


def noise_sigma(
    wave: np.ndarray,
    sigma0: np.ndarray,
    *,
    arm_edges: tuple[float, float] | None = None,
    sky: np.ndarray | None = None,
) -> np.ndarray:
    """Per-pixel flux noise (1e-17 erg/s/cm²/Å), shape (n, nwave).

    sigma0: base noise of each spectrum near 6000 Å, shape (n,).
    arm_edges: (λ_lo, λ_hi) of the spectrograph arm: throughput falls near
        the edges, so the noise rises there (×3 at the very edge).
    sky: sky brightness (nwave,) or (n, nwave); noise grows as sqrt(1 + sky/median).
    Below 4000 Å the noise rises further (blue throughput).
    """
    wave = np.asarray(wave, dtype=np.float64)
    shape = 1.0 + 1.5 * np.exp(-(wave - 3600.0) / 250.0)
    if arm_edges is not None:
        lo, hi = arm_edges
        shape = shape * (1.0 + 2.0 * np.exp(-(wave - lo) / 40.0) + 2.0 * np.exp(-(hi - wave) / 40.0))
    if sky is None:
        sky = sky_spectrum(wave)[0]
    sky = np.asarray(sky, dtype=np.float64)
    med = np.median(sky, axis=-1, keepdims=True)
    skyf = np.sqrt(1.0 + np.clip(sky / med - 1.0, 0.0, None))
    return (np.asarray(sigma0, dtype=np.float64)[:, None] * shape[None, :] * skyf).astype(np.float32)


def add_noise(
    model: np.ndarray,
    sigma: np.ndarray,
    rng: np.random.Generator,
    *,
    masked_fraction: float = 0.001,
    mask_bit: int = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw observed flux from a noise-free model.

    model, sigma: (n, nwave). Returns (flux float32, ivar float32 = 1/sigma²,
    mask uint32). About ``masked_fraction`` of pixels (cosmic-ray hits, in
    short runs of 1–3 pixels) get ivar = 0 and mask bit ``mask_bit``
    (DESI SPECMASK COSMIC = 2); their flux is left as drawn.
    """
    flux = (model + sigma * rng.standard_normal(model.shape, dtype=np.float32)).astype(np.float32)
    ivar = (1.0 / np.square(sigma.astype(np.float64))).astype(np.float32)
    mask = np.zeros(model.shape, dtype=np.uint32)
    n_hits = rng.poisson(masked_fraction * model.shape[1], model.shape[0])
    for i in np.flatnonzero(n_hits):
        starts = rng.integers(0, model.shape[1], n_hits[i])
        for s in starts:
            w = int(rng.integers(1, 4))
            ivar[i, s : s + w] = 0.0
            mask[i, s : s + w] |= np.uint32(1 << mask_bit)
    return flux, ivar, mask
