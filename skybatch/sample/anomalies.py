"""The extra anomaly kinds of the sample generator (see :mod:`skybatch.sample.spectra`).

``qso_weak_lines``, ``qso_strong_lines``, ``seyfert2``, ``star_galaxy``, ``extreme_line_ratio``,
``background_oii`` and ``narrow_line``, and the per-anomaly ``anomaly_strength`` that scales every
kind. :func:`draw_extra_anomalies` draws their parameters into a population;
:func:`apply_extra_anomalies` renders them onto normalised model flux. Pure NumPy.

Honest strengths: an anomaly that the normal population's own scatter can produce is not a fair
target, so at every strength ``s >= 0.5`` (the weakest any benchmark survey draws)

* ``qso_weak_lines`` / ``qso_strong_lines``: the broad-line equivalent-width scale lies
  ``3 + 2 s`` population sigmas (log-normal sigma :data:`QSO_EW_SIGMA`) below / above the median,
  i.e. beyond 4 sigma;
* ``extreme_line_ratio`` / ``seyfert2``: the galaxy sits at a redshift where every line of the odd
  ratio falls inside the DESI coverage (:data:`DESI_RANGE`), and the ratio lies outside the
  normal population's 3-sigma range ([OIII]/Hb > 9.8, Ha/Hb < 2.86, [NII]/Ha > 0.5, [OII]/Hb < 0.6);
* ``star_galaxy``: the star carries at least :data:`MIN_STAR_FRACTION` of the 6000-6400 A flux;
* ``background_oii`` and ``narrow_line``: the line peaks at least 1 (resp. 1.5) times the continuum.

``tests/sample/test_anomaly_strengths.py`` states these criteria.
"""

from __future__ import annotations

import numpy as np

from skybatch.sample.render import _add_gaussians, _star
from skybatch.sample.spectra import _REF_WAVE, C_KMS, _unknown_rest_lines

__all__ = ["DESI_RANGE", "ELR_LINES", "MIN_STAR_FRACTION", "QSO_EW_SIGMA", "apply_extra_anomalies", "draw_extra_anomalies"]

#: log-normal sigma of normal quasars' line-strength scale (``q_ew_scale`` in :mod:`skybatch.sample.spectra`)
QSO_EW_SIGMA = 0.3
#: observed wavelength range (A) of DESI spectra: lines of a line-ratio anomaly must fall inside it
DESI_RANGE = (3600.0, 9800.0)
#: smallest share of the 6000-6400 A flux carried by the star of a ``star_galaxy`` composite
MIN_STAR_FRACTION = 0.25
#: the lines each ``extreme_line_ratio`` variant needs (rest A): [OIII]/Hb, Ha/Hb, [NII]/Ha, [OII]/Hb
ELR_LINES = ((4862.68, 5008.24), (4862.68, 6564.61), (6564.61, 6585.27), (3727.09, 4862.68))
_SEY2_LINES = ((3426.84, 0.5), (3869.86, 1.0), (4687.02, 0.4), (6302.05, 0.5))  # (rest Å, peak / continuum)


def draw_extra_anomalies(p: dict[str, np.ndarray], rng: np.random.Generator, strength: tuple[float, float]) -> None:
    """Set ``anomaly_strength`` and the parameters of the extra kinds in population ``p`` (in place).

    Called last by :func:`~skybatch.sample.spectra.draw_population`, so populations without extra
    kinds or strengths are drawn exactly as before.
    """
    kinds, n = p["anomaly_kind"], p["anomaly_kind"].size
    lo, hi = float(strength[0]), float(strength[1])
    if not 0.0 < lo <= hi:
        raise ValueError(f"anomaly_strength must be a range 0 < lo <= hi, got {strength}")
    s = np.where(kinds != "", rng.uniform(lo, hi, n), 0.0)
    p["anomaly_strength"] = s
    p["bal_depth"] = np.where(kinds == "bal", np.minimum(0.98, p["bal_depth"] * s), p["bal_depth"])
    p["x_amp"] = p["x_amp"] * np.where(kinds == "strong_emission", s, 1.0)
    weak, strong = kinds == "qso_weak_lines", kinds == "qso_strong_lines"
    n_sig = QSO_EW_SIGMA * (3.0 + 2.0 * s)  # beyond 4 population sigmas at s >= 0.5
    p["q_ew_scale"] = np.where(weak, np.exp(-n_sig), np.where(strong, np.exp(n_sig), p["q_ew_scale"]))
    gal_lines = np.isin(kinds, ("seyfert2", "extreme_line_ratio"))
    p["g_young"] = np.where(gal_lines, np.maximum(p["g_young"], 0.4), p["g_young"])
    p["g_ew_hb"] = np.where(gal_lines, rng.uniform(8.0, 25.0, n), p["g_ew_hb"])
    sy = kinds == "seyfert2"
    p["g_oiii_hb"] = np.where(sy, np.maximum(10.0, rng.uniform(8.0, 14.0, n) * np.sqrt(s)), p["g_oiii_hb"])
    p["g_nii_ha"] = np.where(sy, rng.uniform(0.8, 1.5, n), p["g_nii_ha"])
    p["g_sii_ha"] = np.where(sy, rng.uniform(0.3, 0.5, n), p["g_sii_ha"])
    p["g_ha_hb"] = np.where(sy, rng.uniform(3.1, 4.0, n), p["g_ha_hb"])
    ex = kinds == "extreme_line_ratio"
    variant = rng.integers(0, 4, n)
    p["elr_variant"] = np.where(ex, variant, -1)
    p["g_oiii_hb"] = np.where(ex & (variant == 0), 12.0 * (1 + s), p["g_oiii_hb"])
    p["g_ha_hb"] = np.where(ex & (variant == 1), 2.2 / (1 + s), p["g_ha_hb"])
    p["g_nii_ha"] = np.where(ex & (variant == 2), 1.5 * (1 + s), p["g_nii_ha"])
    p["g_oii_hb"] = np.where(ex & (variant == 3), 0.08 / (1 + s), p["g_oii_hb"])
    # every line of the odd ratio (and [OIII], Hb of a Seyfert 2) inside the coverage: redraw z
    hi_obs = DESI_RANGE[1]
    need_hi = np.array([max(v) for v in ELR_LINES])[np.clip(variant, 0, 3)]
    need_hi = np.where(ex, need_hi, np.where(sy, 5008.24, np.inf))
    zmax_cov = hi_obs / (need_hi + 30.0) - 1.0
    move = (ex | sy) & (p["z_true"] > zmax_cov)
    if move.any():
        z_old = p["z_true"][move]
        z_new = rng.uniform(0.03, zmax_cov[move])
        stretch = (1 + z_new) / (1 + z_old)
        p["z"][move] = z_new + (p["z"][move] - z_old) * stretch  # keep each object's catalogue error
        p["zerr"][move] = p["zerr"][move] * stretch
        p["z_true"][move] = z_new
    lrg = np.isin(kinds, ("background_oii", "star_galaxy"))
    p["g_young"] = np.where(lrg & (kinds == "background_oii"), rng.uniform(0.0, 0.1, n), p["g_young"])
    p["g_ew_hb"] = np.where(kinds == "background_oii", 0.0, p["g_ew_hb"])
    zmax = 9400.0 / 3728.48 - 1.0
    zbg = np.minimum(p["z_true"] + rng.uniform(0.15, 0.8, n), zmax)
    p["bg_z"] = np.where(kinds == "background_oii", zbg, np.nan)
    p["bg_amp"] = np.where(kinds == "background_oii", np.maximum(1.0, rng.uniform(1.0, 3.0, n) * s), 0.0)
    p["sg_frac"] = np.where(kinds == "star_galaxy",
                            np.clip(rng.uniform(0.3, 0.6, n) * s, MIN_STAR_FRACTION, 0.9), 0.0)
    p["sg_teff"] = np.exp(rng.uniform(np.log(3500.0), np.log(7000.0), n))
    nl = kinds == "narrow_line"
    p["nl_wave"] = np.full(n, np.nan)
    for i in np.flatnonzero(nl):
        p["nl_wave"][i] = _unknown_rest_lines(rng, float(p["z_true"][i]))[0]
    p["nl_amp"] = np.where(nl, np.maximum(1.5, rng.uniform(2.0, 6.0, n) * s), 0.0)


def _narrow(wave: np.ndarray, rest: np.ndarray, z: np.ndarray, amp: np.ndarray, lsf: np.ndarray,
            sigma_kms: float = 80.0) -> np.ndarray:
    """Narrow emission lines (peak ``amp`` x the normalised continuum) at rest wavelengths ``rest``, (n, nwave)."""
    out = np.zeros((z.size, wave.size))
    c = rest * (1 + z)
    _add_gaussians(out, wave, c, np.hypot(c * sigma_kms / C_KMS, lsf), amp)
    return out


def apply_extra_anomalies(wave: np.ndarray, flux: np.ndarray, p: dict[str, np.ndarray], z: np.ndarray,
                          lsf: np.ndarray) -> np.ndarray:
    """Add the extra kinds' features to normalised model flux (N, P) on observed ``wave``; returns it."""
    kinds, s = p["anomaly_kind"], p["anomaly_strength"]
    sy = np.flatnonzero(kinds == "seyfert2")
    for w0, a in _SEY2_LINES:
        if sy.size:
            flux[sy] += _narrow(wave, np.full(sy.size, w0), z[sy], a * s[sy] * np.ones(sy.size), lsf[sy], 200.0)
    bg = np.flatnonzero(kinds == "background_oii")
    if bg.size:
        for w0, share in ((3727.09, 0.45), (3729.88, 0.55)):
            flux[bg] += _narrow(wave, np.full(bg.size, w0), p["bg_z"][bg], p["bg_amp"][bg] * share * 1.6, lsf[bg], 60.0)
    nl = np.flatnonzero(kinds == "narrow_line")
    if nl.size:
        flux[nl] += _narrow(wave, p["nl_wave"][nl], z[nl], p["nl_amp"][nl], lsf[nl], 80.0)
    sg = np.flatnonzero(kinds == "star_galaxy")
    if sg.size:
        star = {"s_teff": p["sg_teff"][sg]}
        zs = np.zeros(sg.size)
        sf = _star(wave, star, zs, lsf[sg])
        ref = _star(_REF_WAVE, star, zs, lsf[sg]).mean(axis=1)
        f = p["sg_frac"][sg, None]
        flux[sg] = (1 - f) * flux[sg] + f * sf / ref[:, None]
    return flux
