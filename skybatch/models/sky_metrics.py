"""Metrics a sky scientist reads off generated vs real sky spectra (pure NumPy).

* :func:`airglow_lines`: brightness of the strongest airglow features above the local continuum:
  [O I] 5577, [O I] 6300, Na D (5890/5896) — the summed flux in ±6 Å minus the median of side
  bands 10–25 Å away — and the OH bands, the flux in 8250–8900 Å above that window's 10th
  percentile (OH Meinel (6-2)/(7-3) bands). Units: flux unit × Å (1e-17 erg/s/cm²/arcsec²).
* :func:`continua`: median flux in g, r, z windows (4200–5400, 5600–6250, 8300–9800 Å; the z window
  holds the OH forest, so its median is the floor between the lines).
* :func:`ratio_stats`: median relative error ``median |x_gen / x_real - 1|`` and its scatter
  (1.4826 × MAD of ``x_gen / x_real - 1``) over exposures paired by conditions.
* :func:`c2st_auc`: a two-sample classifier test: logistic regression on standardised features,
  k-fold cross-validated; the out-of-fold ROC AUC is ~0.5 when the two samples are
  indistinguishable and 1 when they are fully separable.
* :func:`trend_slope`: least-squares slope of ``log10 y`` against a condition.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LINE_CENTRES", "CONTINUUM_WINDOWS", "airglow_lines", "continua", "sky_features", "ratio_stats",
           "c2st_auc", "roc_auc", "trend_slope"]

LINE_CENTRES = {"OI5577": 5578.9, "OI6300": 6302.0, "NaD": 5894.6}
OH_BAND = (8250.0, 8900.0)
CONTINUUM_WINDOWS = {"g": (4200.0, 5400.0), "r": (5600.0, 6250.0), "z": (8300.0, 9800.0)}


def airglow_lines(wave: np.ndarray, flux: np.ndarray, half_width: float = 6.0) -> dict[str, np.ndarray]:
    """Line brightness per spectrum, each (n,): keys ``OI5577``, ``OI6300``, ``NaD``, ``OH``."""
    wave = np.asarray(wave)
    flux = np.atleast_2d(np.asarray(flux, np.float64))
    dl = float(np.median(np.diff(wave)))
    out = {}
    for name, c in LINE_CENTRES.items():
        s = (wave > c - half_width) & (wave < c + half_width)
        side = ((wave > c - 25) & (wave < c - 10)) | ((wave > c + 10) & (wave < c + 25))
        out[name] = (flux[:, s] - np.median(flux[:, side], axis=1, keepdims=True)).sum(1) * dl
    s = (wave > OH_BAND[0]) & (wave < OH_BAND[1])
    out["OH"] = (flux[:, s] - np.percentile(flux[:, s], 10, axis=1, keepdims=True)).sum(1) * dl
    return out


def continua(wave: np.ndarray, flux: np.ndarray) -> dict[str, np.ndarray]:
    """Median flux in the g, r, z windows, each (n,)."""
    flux = np.atleast_2d(np.asarray(flux, np.float64))
    return {b: np.median(flux[:, (wave > lo) & (wave < hi)], axis=1) for b, (lo, hi) in CONTINUUM_WINDOWS.items()}


def sky_features(wave: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """(n, 7) features for the two-sample test: log10 of the 4 line brightnesses and 3 continua
    (clipped at 1e-3 of the median so a negative measurement stays finite)."""
    d = {**airglow_lines(wave, flux), **continua(wave, flux)}
    cols = []
    for v in d.values():
        floor = 1e-3 * max(float(np.nanmedian(np.abs(v))), 1e-12)
        cols.append(np.log10(np.maximum(v, floor)))
    return np.stack(cols, axis=1)


def ratio_stats(gen: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """``median_rel_err`` = median |gen/real - 1| and ``scatter`` = 1.4826 MAD(gen/real - 1), finite pairs."""
    gen, real = np.asarray(gen, np.float64), np.asarray(real, np.float64)
    ok = np.isfinite(gen) & np.isfinite(real) & (real > 0)
    r = gen[ok] / real[ok] - 1.0
    if not r.size:
        return {"median_rel_err": float("nan"), "scatter": float("nan"), "bias": float("nan")}
    return {"median_rel_err": float(np.median(np.abs(r))), "bias": float(np.median(r)),
            "scatter": float(1.4826 * np.median(np.abs(r - np.median(r))))}


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC of ``score`` for binary ``label`` (Mann–Whitney U with mid-ranks for ties)."""
    from scipy.stats import rankdata

    score, label = np.asarray(score, np.float64), np.asarray(label, bool)
    n1, n0 = int(label.sum()), int((~label).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(score)
    return float((r[label].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _logistic_fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50) -> np.ndarray:
    xb = np.concatenate([x, np.ones((len(x), 1))], 1)
    w = np.zeros(xb.shape[1])
    reg = l2 * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0
    for _ in range(iters):  # Newton steps
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (p - y) + reg @ w
        h = (xb * (p * (1 - p))[:, None]).T @ xb + reg + 1e-9 * np.eye(len(w))
        w -= np.linalg.solve(h, grad)
    return w


def c2st_auc(a: np.ndarray, b: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Out-of-fold ROC AUC of a logistic regression telling feature rows ``a`` (n_a, d) from ``b`` (n_b, d)."""
    x = np.concatenate([a, b]).astype(np.float64)
    y = np.concatenate([np.zeros(len(a)), np.ones(len(b))])
    ok = np.all(np.isfinite(x), axis=1)
    x, y = x[ok], y[ok]
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    fold = np.random.default_rng(seed).permutation(len(x)) % folds
    score = np.zeros(len(x))
    for k in range(folds):
        te = fold == k
        w = _logistic_fit(x[~te], y[~te])
        score[te] = np.concatenate([x[te], np.ones((te.sum(), 1))], 1) @ w
    return roc_auc(score, y.astype(bool))


def trend_slope(condition: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log10(y) vs ``condition`` (per unit of the condition), finite positive y."""
    c, y = np.asarray(condition, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(c) & np.isfinite(y) & (y > 0)
    if ok.sum() < 3:
        return float("nan")
    return float(np.polyfit(c[ok], np.log10(y[ok]), 1)[0])
