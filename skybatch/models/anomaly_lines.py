"""Emission-line measurements at known rest wavelengths, for anomaly features judged per population.

On rest-frame spectra (flux, ivar on a rest wavelength grid; pixels a spectrum does not cover have
``ivar = 0``) each line of :data:`QSO_LINES` / :data:`GALAXY_LINES` is measured the plain way: a
linear continuum through the weighted mean flux of two sidebands, the line flux integrated over its
window above that continuum, and its error from ``ivar``. A line whose window or sidebands are less
than ``min_cover`` covered is NaN.

:func:`line_features` turns the measurements into features an anomaly score compares within each
(class, redshift bin) population (:mod:`skybatch.models.anomaly_features`):

* quasars: ``qso_line_scale``, the log of the S/N-weighted mean ratio of every covered broad line's
  equivalent width to its population median (a quasar whose lines are all weaker or stronger than
  usual; judged on both sides), and ``qso_trough``, the fractional flux deficit blueward of C IV
  and Si IV against the continuum (broad absorption troughs);
* galaxies: ``gal_<line>_snr``, the significance of lines normal galaxies do not show ([Ne V],
  [Ne III], He II, [O I]: Seyfert-2 ionisation), and ``gal_<a>/<b>``, log line ratios ([O III]/Hb,
  Ha/Hb, [N II]/Ha, [O II]/Hb) where one of the two lines is detected, the other floored at twice
  its error (a conservative bound), judged on both sides.

Pure NumPy; one block of spectra at a time.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GALAXY_LINES", "GALAXY_RATIOS", "QSO_LINES", "LineSet", "line_features", "measure_lines"]

#: name -> (window lo, window hi, (sideband lo, hi), (sideband lo, hi)), rest-frame A
LineSet = dict[str, tuple[float, float, tuple[float, float], tuple[float, float]]]

QSO_LINES: LineSet = {
    "SiIV": (1370.0, 1430.0, (1320.0, 1350.0), (1440.0, 1470.0)),
    "CIV": (1500.0, 1600.0, (1440.0, 1470.0), (1690.0, 1730.0)),
    "CIII]": (1860.0, 1960.0, (1790.0, 1840.0), (1980.0, 2030.0)),
    "MgII": (2730.0, 2870.0, (2640.0, 2700.0), (2900.0, 2960.0)),
    "Hbeta": (4790.0, 4935.0, (4680.0, 4740.0), (5050.0, 5110.0)),
    "Halpha": (6460.0, 6670.0, (6350.0, 6420.0), (6740.0, 6820.0)),
}
GALAXY_LINES: LineSet = {
    "[NeV]": (3419.0, 3435.0, (3395.0, 3412.0), (3442.0, 3460.0)),
    "[OII]": (3719.0, 3738.0, (3690.0, 3710.0), (3750.0, 3770.0)),
    "[NeIII]": (3862.0, 3877.0, (3840.0, 3856.0), (3900.0, 3915.0)),
    "HeII": (4679.0, 4695.0, (4655.0, 4672.0), (4700.0, 4720.0)),
    "Hbeta": (4854.0, 4871.0, (4825.0, 4845.0), (4880.0, 4900.0)),
    "[OIII]": (5000.0, 5016.0, (4975.0, 4992.0), (5025.0, 5045.0)),
    "[OI]": (6294.0, 6310.0, (6270.0, 6288.0), (6320.0, 6340.0)),
    "Halpha": (6556.0, 6573.0, (6500.0, 6535.0), (6610.0, 6640.0)),
    "[NII]": (6577.0, 6592.0, (6500.0, 6535.0), (6610.0, 6640.0)),
}
#: lines normal star-forming galaxies do not show (high ionisation)
GALAXY_UNEXPECTED = ("[NeV]", "[NeIII]", "HeII", "[OI]")
#: (numerator, denominator) of the galaxy line ratios
GALAXY_RATIOS = (("[OIII]", "Hbeta"), ("Halpha", "Hbeta"), ("[NII]", "Halpha"), ("[OII]", "Hbeta"))
#: rest-frame windows (A) of broad absorption troughs (blueward of C IV and Si IV) and their continuum
_TROUGHS = ((1420.0, 1525.0), (1290.0, 1385.0))
_TROUGH_CONT = ((1690.0, 1730.0), (2150.0, 2250.0))


def _band_mean(flux: np.ndarray, ivar: np.ndarray, sel: np.ndarray, min_cover: float):
    """Weighted mean flux over ``sel`` pixels, its variance, and whether enough pixels are good."""
    iv = ivar[:, sel]
    good = iv > 0
    sw = iv.sum(1, dtype=np.float64)
    m = np.where(sw > 0, (iv * flux[:, sel]).sum(1, dtype=np.float64) / np.maximum(sw, 1e-30), np.nan)
    ok = (good.mean(1) >= min_cover) & (sw > 0)
    return np.where(ok, m, np.nan), np.where(ok, 1.0 / np.maximum(sw, 1e-30), np.nan)


def measure_lines(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, lines: LineSet,
                  min_cover: float = 0.8) -> dict[str, np.ndarray]:
    """Flux, error and equivalent width of each line of spectra (N, P) on the rest grid ``wavelength`` (P,) in A.

    **Returns** ``flux`` (N, L) line flux above the sideband continuum (flux units x A), ``err``
    (N, L) its 1-sigma error, ``ew`` (N, L) the equivalent width (A, flux / continuum) and ``cont``
    (N, L) the continuum at the line; NaN where the line is not covered.
    """
    wl = np.asarray(wavelength, np.float64)
    x = np.nan_to_num(np.asarray(flux, np.float64))
    iv = np.where(np.isfinite(flux) & (np.asarray(ivar) > 0), np.asarray(ivar, np.float64), 0.0)
    dl = np.gradient(wl)
    n, nl = x.shape[0], len(lines)
    out = {k: np.full((n, nl), np.nan) for k in ("flux", "err", "ew", "cont")}
    for j, (lo, hi, sb1, sb2) in enumerate(lines.values()):
        sel = (wl >= lo) & (wl <= hi)
        s1 = (wl >= sb1[0]) & (wl <= sb1[1])
        s2 = (wl >= sb2[0]) & (wl <= sb2[1])
        if not (sel.any() and s1.any() and s2.any()):
            continue
        m1, v1 = _band_mean(x, iv, s1, min_cover)
        m2, v2 = _band_mean(x, iv, s2, min_cover)
        c1, c2 = 0.5 * sum(sb1), 0.5 * sum(sb2)
        t = (wl[sel] - c1) / (c2 - c1)  # linear continuum between the sideband centres
        cont = m1[:, None] * (1 - t)[None, :] + m2[:, None] * t[None, :]
        good = iv[:, sel] > 0
        cover = good.mean(1)
        # the line flux over the window; bad pixels take the continuum (no line), counted in the error
        f = (np.where(good, x[:, sel] - cont, 0.0) * dl[sel]).sum(1) / np.maximum(cover, 1e-3)
        var_pix = (np.where(good, 1.0 / np.maximum(iv[:, sel], 1e-30), 0.0) * dl[sel] ** 2).sum(1)
        var_pix = var_pix / np.maximum(cover, 1e-3) ** 2
        w_sum = dl[sel].sum()
        var_cont = (w_sum * (1 - t.mean())) ** 2 * v1 + (w_sum * t.mean()) ** 2 * v2
        c_line = 0.5 * (cont[:, 0] + cont[:, -1])
        ok = (cover >= min_cover) & np.isfinite(m1) & np.isfinite(m2)
        out["flux"][:, j] = np.where(ok, f, np.nan)
        out["err"][:, j] = np.where(ok, np.sqrt(var_pix + var_cont), np.nan)
        out["cont"][:, j] = np.where(ok, c_line, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["ew"][:, j] = np.where(ok & (c_line > 0), f / c_line, np.nan)
    return out


def _troughs(wl: np.ndarray, x: np.ndarray, iv: np.ndarray, min_cover: float) -> np.ndarray:
    """Largest fractional flux deficit (1 - mean / continuum) over the trough windows, (N,); NaN if uncovered.

    The continuum is a power law through two line-free windows redward of C IV (or, for quasars
    at too high a redshift, a flat one through the window that is covered).
    """
    (a1, b1), (a2, b2) = _TROUGH_CONT
    m1, _ = _band_mean(x, iv, (wl >= a1) & (wl <= b1), min_cover)
    m2, _ = _band_mean(x, iv, (wl >= a2) & (wl <= b2), min_cover)
    l1, l2 = 0.5 * (a1 + b1), 0.5 * (a2 + b2)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where((m1 > 0) & (m2 > 0), np.log(m2 / m1) / np.log(l2 / l1), 0.0)
    ref = np.where(np.isfinite(m1), m1, np.nan)
    out = np.full(x.shape[0], np.nan)
    for lo, hi in _TROUGHS:
        sel = (wl >= lo) & (wl <= hi)
        m, _ = _band_mean(x, iv, sel, 0.5)
        cont = ref * (0.5 * (lo + hi) / l1) ** slope
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(cont > 0, 1.0 - m / cont, np.nan)
        out = np.where(np.isnan(out), d, np.where(np.isnan(d), out, np.maximum(out, d)))
    return out


def line_features(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, spectype: np.ndarray,
                  qso_ew_median: np.ndarray | None = None, min_cover: float = 0.8) -> dict[str, np.ndarray]:
    """Raw line features (N,) of a block of rest-frame spectra (N, P); see the module docstring.

    ``qso_ew_median`` (L,) is each quasar line's population median equivalent width (from
    :func:`qso_ew_reference`); without it ``qso_line_scale`` is NaN. Features that do not apply
    to a spectrum's class, or whose lines it does not cover, are NaN. Higher is not always odder:
    the ``two_sided`` features (:data:`TWO_SIDED`) are odd at both ends.
    """
    wl = np.asarray(wavelength, np.float64)
    st = np.asarray(spectype).astype(str)
    n = st.size
    x = np.nan_to_num(np.asarray(flux, np.float64))
    iv = np.where(np.isfinite(flux) & (np.asarray(ivar) > 0), np.asarray(ivar, np.float64), 0.0)
    out: dict[str, np.ndarray] = {}
    q = st == "QSO"
    out["qso_line_scale"] = np.full(n, np.nan)
    out["qso_trough"] = np.full(n, np.nan)
    if q.any():
        m = measure_lines(wl, x[q], iv[q], QSO_LINES, min_cover)
        if qso_ew_median is not None:
            ratio = m["ew"] / np.asarray(qso_ew_median)[None, :]
            w = np.where(np.isfinite(ratio) & (m["err"] > 0),
                         (np.asarray(qso_ew_median)[None, :] * np.nan_to_num(m["cont"]) / m["err"]) ** 2, 0.0)
            w = np.minimum(w, 400.0)  # past S/N 20 a line's own scatter dominates: equal weights
            num = (w * np.nan_to_num(ratio)).sum(1)
            den = w.sum(1)
            with np.errstate(divide="ignore", invalid="ignore"):
                mean_ratio = np.where(den > 0, num / den, np.nan)
            out["qso_line_scale"][q] = np.log(np.clip(mean_ratio, 0.03, None))
        out["qso_trough"][q] = _troughs(wl, x[q], iv[q], min_cover)
    g = st == "GALAXY"
    names = list(GALAXY_LINES)
    for name in GALAXY_UNEXPECTED:
        out[f"gal_{name}_snr"] = np.full(n, np.nan)
    for a, b in GALAXY_RATIOS:
        out[f"gal_{a}/{b}"] = np.full(n, np.nan)
    if g.any():
        m = measure_lines(wl, x[g], iv[g], GALAXY_LINES, min_cover)
        f, e = m["flux"], m["err"]
        for name in GALAXY_UNEXPECTED:
            j = names.index(name)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[f"gal_{name}_snr"][g] = f[:, j] / e[:, j]
        for a, b in GALAXY_RATIOS:
            ja, jb = names.index(a), names.index(b)
            fa = np.maximum(f[:, ja], 2 * e[:, ja])
            fb = np.maximum(f[:, jb], 2 * e[:, jb])
            detected = (f[:, ja] > 5 * e[:, ja]) | (f[:, jb] > 5 * e[:, jb])
            with np.errstate(divide="ignore", invalid="ignore"):
                out[f"gal_{a}/{b}"][g] = np.where(detected, np.log(fa / fb), np.nan)
    return out


#: features that are odd at both ends (judged by |robust z|)
TWO_SIDED = ("qso_line_scale",) + tuple(f"gal_{a}/{b}" for a, b in GALAXY_RATIOS)


def qso_ew_reference(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, min_cover: float = 0.8) -> np.ndarray:
    """Median equivalent width (A) of each line of :data:`QSO_LINES` over quasar spectra (N, P), (L,)."""
    m = measure_lines(wavelength, flux, ivar, QSO_LINES, min_cover)
    good = np.isfinite(m["ew"]) & (m["flux"] > 0) & (m["flux"] > 3 * m["err"])
    return np.array([np.median(m["ew"][good[:, j], j]) if good[:, j].sum() >= 5 else np.nan
                     for j in range(m["ew"].shape[1])])
