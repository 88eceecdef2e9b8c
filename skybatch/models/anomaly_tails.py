"""Per-population tail probabilities of anomaly features, free of the spectrum's S/N, and their combination.

Every feature (a PCA misfit, a local residual, a quasar's line-strength scale, a galaxy line ratio
...) is judged within its (class, redshift bin) cell, so that its tail means the same for every
class and redshift:

1. :func:`snr_detrended_z`: a misfit statistic grows or shrinks with the spectrum's S/N (a
   residual of a per cent is noise in a faint spectrum and significant in a bright one), so the
   score would rank noise, not oddness. Within each cell a robust straight line in ``log S/N``
   (iteratively 3-sigma clipped least squares) is removed before the robust z-score (median, scale
   ``max(1.4826 MAD, (q95 - median) / 1.645)``). Two-sided features (a line ratio, a quasar whose
   lines are too weak *or* too strong) get one scale per side.
2. :func:`tail_log_p`: the z of each feature becomes ``-log10 p``, its tail probability against
   the members of its cell: empirical below the cell's 90 % quantile, an exponential tail (mean
   excess over the quantile) beyond it, so a feature whose normal members have heavy tails (noisy
   line ratios) does not outrank one whose tail is thin (a quasar line scale).
3. :func:`combine_tails`: ``max_t(-log10 p_t) - log10(n_t)``, the Bonferroni-corrected smallest
   tail probability over the ``n_t`` features a spectrum has: one odd line is enough, and a class
   with more features is not favoured.

Pure NumPy; arrays (N,) over the spectra being ranked.
"""

from __future__ import annotations

import numpy as np

from skybatch.models.anomaly_population import robust_center_scale

__all__ = ["combine_tails", "log_snr", "snr_detrended_z", "tail_log_p", "tail_score"]

_TAIL_SIGMA = 1.6448536269514722


def log_snr(flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """Natural log of the median per-pixel S/N ``|flux| sqrt(ivar)`` over good pixels, (N,) from (N, P)."""
    s = np.where(np.asarray(ivar) > 0, np.abs(np.asarray(flux, np.float64)) * np.sqrt(np.maximum(ivar, 0)), np.nan)
    good = np.isfinite(s).any(1)
    med = np.full(s.shape[0], np.nan)
    if good.any():
        med[good] = np.nanmedian(s[good], axis=1)
    return np.log(np.maximum(med, 1e-3))


def snr_detrended_z(values: np.ndarray, lsnr: np.ndarray, cell: np.ndarray, *, two_sided: bool = False,
                    min_members: int = 10) -> np.ndarray:
    """Robust z (N,) of ``values`` within each cell after removing a robust linear trend in ``lsnr``.

    **Arguments:** `values` (N,) raw feature (higher = odder unless `two_sided`); `lsnr` (N,) log
    S/N (:func:`log_snr`); `cell` (N,) integer population cell. Cells with fewer than
    `min_members` finite values get NaN; a NaN ``lsnr`` uses no trend.
    """
    v = np.asarray(values, np.float64)
    x = np.asarray(lsnr, np.float64)
    out = np.full(v.size, np.nan)
    for c in np.unique(cell):
        r = np.flatnonzero((cell == c) & np.isfinite(v))
        if r.size < min_members:
            continue
        xr = np.where(np.isfinite(x[r]), x[r], np.nanmedian(x[r]) if np.isfinite(x[r]).any() else 0.0)
        a = np.vstack([np.ones(r.size), xr]).T
        keep = np.ones(r.size, bool)
        coef = np.array([np.median(v[r]), 0.0])
        for _ in range(4):
            if keep.sum() < 3:
                break
            coef = np.linalg.lstsq(a[keep], v[r][keep], rcond=None)[0]
            res = v[r] - a @ coef
            med, s = robust_center_scale(res[keep])
            keep = np.abs(res - med) < 3 * s
        res = v[r] - a @ coef
        if two_sided:
            q05, med, q95 = np.quantile(res, [0.05, 0.5, 0.95])
            lo = max((med - q05) / _TAIL_SIGMA, 1e-12)
            hi = max((q95 - med) / _TAIL_SIGMA, 1e-12)
            out[r] = np.where(res < med, (med - res) / lo, (res - med) / hi)
        else:
            med, s = robust_center_scale(res)
            out[r] = (res - med) / s
    return out


def tail_log_p(values: np.ndarray, cell: np.ndarray, *, quantile: float = 0.9, min_members: int = 20) -> np.ndarray:
    """``-log10`` of each value's upper-tail probability (N,) against the finite values of its cell.

    Below the cell's `quantile` the empirical survival fraction; beyond it ``(1 - quantile)
    exp(-(v - q) / beta)`` with ``beta`` the members' mean excess over ``q``. Cells with fewer
    than `min_members` finite values, and NaN values, give NaN.
    """
    v = np.asarray(values, np.float64)
    out = np.full(v.size, np.nan)
    for c in np.unique(cell):
        rows = np.flatnonzero(cell == c)
        x = v[rows]
        f = np.isfinite(x)
        if f.sum() < min_members:
            continue
        srt = np.sort(x[f])
        q = float(np.quantile(srt, quantile))
        excess = srt[srt > q] - q
        beta = max(float(excess.mean()), 1e-12) if excess.size else 1e-12
        p_emp = 1.0 - np.searchsorted(srt, x, side="left") / srt.size
        with np.errstate(over="ignore", invalid="ignore"):
            p = np.where(x > q, (1.0 - quantile) * np.exp(-(x - q) / beta), p_emp)
        out[rows] = np.where(f, -np.log10(np.clip(p, 1e-300, 1.0)), np.nan)
    return out


def combine_tails(log_p: dict[str, np.ndarray]) -> np.ndarray:
    """``max_t(-log10 p_t) - log10(n_t)`` over the finite features of each spectrum, (N,); NaN if none."""
    stack = np.stack([np.asarray(v, np.float64) for v in log_p.values()])
    fin = np.isfinite(stack)
    n = fin.sum(0)
    best = np.where(fin, stack, -np.inf).max(0)
    return np.where(n > 0, best - np.log10(np.maximum(n, 1)), np.nan)


def tail_score(features: dict[str, np.ndarray], lsnr: np.ndarray, cell: np.ndarray, *,
               two_sided: tuple[str, ...] = (), calibrated: tuple[str, ...] = (), groups: np.ndarray | None = None
               ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-cell z of every feature and the combined score, (N,) each; see the module docstring.

    **Arguments:** `features` name -> (N,) raw values (NaN where a feature does not apply);
    `lsnr` (N,) log S/N; `cell` (N,) population cell; `two_sided` names odd at both ends;
    `calibrated` names already judged within their cell (used as they are, no S/N trend removed);
    `groups` (N,) integer population (e.g. the SPECTYPE) over which each feature's tail
    probability is calibrated: the z is still per cell, but the tail of a class is estimated from
    all its cells together (a cell of 150 members has only 15 beyond its 90 % quantile, too few
    for a stable exponential tail). Default: per cell.

    **Returns** ``(z, score)``: name -> (N,) z of the features that apply to any spectrum, and
    (N,) :func:`combine_tails` of their :func:`tail_log_p`.
    """
    z: dict[str, np.ndarray] = {}
    for k, v in features.items():
        v = np.asarray(v, np.float64)
        if not np.isfinite(v).any():
            continue
        z[k] = v if k in calibrated else snr_detrended_z(v, lsnr, cell, two_sided=k in two_sided)
    tail_cells = cell if groups is None else np.asarray(groups)
    return z, combine_tails({k: tail_log_p(v, tail_cells) for k, v in z.items()})
