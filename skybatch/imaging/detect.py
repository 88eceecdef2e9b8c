"""Transient candidates from a ZOGY ``S_corr`` map.

:func:`detect_candidates` finds local maxima of ``S_corr`` (and of ``-S_corr`` for
fading sources) above a threshold in sigma, drops those near the image edges
(circular-convolution wrap: a PSF half-width by default) and near masked or
saturated pixels (given as boolean masks, dilated), enforces a minimum
separation (the most significant peak wins), refines positions to sub-pixel
precision with a parabola through the 3x3 neighbourhood, and measures each
candidate's ZOGY point-source flux from ``F_psf`` at that position.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from skybatch.imaging._util import dilate, gather, local_maxima
from skybatch.xp import get_namespace, to_numpy

Array = Any

__all__ = ["detect_candidates", "expected_false_positives", "CANDIDATE_COLUMNS"]

CANDIDATE_COLUMNS = (
    "x", "y", "x_peak", "y_peak", "S_corr", "significance", "sign", "flux", "flux_err", "snr",
)


def detect_candidates(
    result: Any,
    threshold: float = 5.0,
    *,
    edge: int | None = None,
    mask: Array | None = None,
    saturated: Array | None = None,
    mask_dilate: int | None = None,
    saturated_dilate: int | None = None,
    min_separation: float | None = None,
    sign: str = "both",
    wcs: Any = None,
):
    """Detect candidates on ``result.S_corr``.

    Parameters
    ----------
    result : a :class:`~skybatch.imaging.zogy.ZogyResult` (or anything with ``S_corr``,
        ``F_psf``, ``F_psf_err`` (ny, nx) maps and a ``P_D`` stamp).
    threshold : detection threshold on |S_corr| (sigma).
    edge : exclude peaks within this many pixels of the border (default: the P_D stamp
        width, at least 3: the transforms are circular, so S near a border mixes with the
        opposite border over about that distance).
    mask : boolean (ny, nx), True = bad pixel (either image); dilated by ``mask_dilate``
        (default P_D half-width). ``result.bad`` is always added.
    saturated : boolean (ny, nx) of saturated pixels (either image); dilated by
        ``saturated_dilate`` (default twice the P_D half-width; saturated stars have
        wide residual wings).
    min_separation : peaks closer than this (px) to a more significant one are dropped
        (default: the P_D half-width, at least 2).
    sign : "both", "positive" (brightening only) or "negative" (fading only).
    wcs : optional astropy WCS of the science grid; adds ``ra``, ``dec`` (deg).

    Returns
    -------
    pandas.DataFrame, one row per candidate sorted by decreasing significance, columns
    ``x``, ``y`` (sub-pixel, 0-based, pixel centres on integers), ``x_peak``, ``y_peak``
    (int), ``S_corr`` (signed peak value), ``significance`` (|S_corr|), ``sign`` (+1/-1),
    ``flux``, ``flux_err`` (ZOGY point-source flux and error in new-image counts;
    negative flux for fading sources), ``snr`` (flux / flux_err), and ``ra``, ``dec``
    with a WCS.
    """
    import pandas as pd

    if sign not in ("both", "positive", "negative"):
        raise ValueError(f"sign={sign!r}: use 'both', 'positive' or 'negative'")
    S = result.S_corr
    xp = get_namespace(S)
    ny, nx = S.shape
    half = int(max(getattr(result, "P_D", np.zeros((7, 7))).shape) // 2)
    edge = max(2 * half + 1, 3) if edge is None else int(edge)
    mask_dilate = half if mask_dilate is None else int(mask_dilate)
    saturated_dilate = 2 * half if saturated_dilate is None else int(saturated_dilate)
    min_sep = float(max(half, 2)) if min_separation is None else float(min_separation)

    valid = xp.zeros((ny, nx), dtype=xp.bool)
    if ny > 2 * edge and nx > 2 * edge:
        valid[edge : ny - edge, edge : nx - edge] = True
    bad = getattr(result, "bad", None)
    if mask is not None:
        bad = xp.asarray(mask) if bad is None else (bad | xp.asarray(mask))
    if bad is not None:
        valid = valid & ~dilate(xp, bad, mask_dilate)
    if saturated is not None:
        valid = valid & ~dilate(xp, xp.asarray(saturated), saturated_dilate)

    rows_y, rows_x, signs = [], [], []
    for s, want in ((1, sign in ("both", "positive")), (-1, sign in ("both", "negative"))):
        if not want:
            continue
        peaks = local_maxima(xp, S if s > 0 else -S, float(threshold), valid)
        idx = np.flatnonzero(np.asarray(to_numpy(xp.reshape(peaks, (-1,)))))
        rows_y.append(idx // nx)
        rows_x.append(idx % nx)
        signs.append(np.full(idx.size, s, dtype=np.int64))
    iy = np.concatenate(rows_y) if rows_y else np.zeros(0, np.int64)
    ix = np.concatenate(rows_x) if rows_x else np.zeros(0, np.int64)
    sg = np.concatenate(signs) if signs else np.zeros(0, np.int64)

    # values at the peak and its 4 neighbours (peaks are never on the border row/column)
    def five(img: Array) -> np.ndarray:
        ys = np.stack([iy, iy, iy, iy - 1, iy + 1])
        xs = np.stack([ix, ix - 1, ix + 1, ix, ix])
        return gather(xp, img, ys.ravel(), xs.ravel()).reshape(5, -1)

    s5 = five(S)
    peak = s5[0]
    order = np.argsort(-np.abs(peak), kind="stable")
    keep = _min_separation(ix[order], iy[order], min_sep)
    sel = order[keep]
    iy, ix, sg, s5 = iy[sel], ix[sel], sg[sel], s5[:, sel]

    # sub-pixel refinement on sign * S_corr: a parabola through the logarithms of the
    # 3 samples per axis (exact for a Gaussian-shaped peak), or through the values
    # themselves when a neighbour is not positive
    v = s5 * sg
    dx = _vertex_offset(v[1], v[0], v[2])
    dy = _vertex_offset(v[3], v[0], v[4])
    f5 = five(result.F_psf) * sg
    flux = sg * (_interp_value(f5[1], f5[0], f5[2], dx) * _interp_value(f5[3], f5[0], f5[4], dy) / _safe(f5[0]))
    flux_err = gather(xp, result.F_psf_err, iy, ix)
    table = {
        "x": ix + dx,
        "y": iy + dy,
        "x_peak": ix.astype(np.int64),
        "y_peak": iy.astype(np.int64),
        "S_corr": s5[0],
        "significance": np.abs(s5[0]),
        "sign": sg.astype(np.int64),
        "flux": flux,
        "flux_err": flux_err,
        "snr": flux / np.where(flux_err > 0, flux_err, np.nan),
    }
    if wcs is not None:
        if len(ix):
            ra, dec = wcs.all_pix2world(table["x"], table["y"], 0)
        else:
            ra, dec = np.zeros(0), np.zeros(0)
        table["ra"] = np.asarray(ra, dtype=np.float64)
        table["dec"] = np.asarray(dec, dtype=np.float64)
    return pd.DataFrame(table)


def _parabola_offset(vm: np.ndarray, v0: np.ndarray, vp: np.ndarray) -> np.ndarray:
    """Vertex offset in [-0.5, 0.5] of the parabola through (-1, vm), (0, v0), (1, vp)."""
    curv = vm - 2.0 * v0 + vp
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(curv < 0, 0.5 * (vm - vp) / curv, 0.0)
    return np.clip(np.nan_to_num(off), -0.5, 0.5)


def _parabola_value(vm, v0, vp, t):
    return v0 + 0.5 * t * (vp - vm) + 0.5 * t * t * (vp - 2.0 * v0 + vm)


def _all_positive(vm, v0, vp):
    return (vm > 0) & (v0 > 0) & (vp > 0)


def _log3(vm, v0, vp):
    pos = _all_positive(vm, v0, vp)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pos, np.log(np.where(pos, vm, 1.0)), np.log(np.where(pos, v0, 1.0)), np.log(np.where(pos, vp, 1.0))


def _vertex_offset(vm, v0, vp):
    """Peak offset: log-parabola (Gaussian) where all three samples are positive."""
    pos, lm, l0, lp = _log3(vm, v0, vp)
    return np.where(pos, _parabola_offset(lm, l0, lp), _parabola_offset(vm, v0, vp))


def _interp_value(vm, v0, vp, t):
    """Value at offset ``t``: Gaussian interpolation where all samples are positive."""
    pos, lm, l0, lp = _log3(vm, v0, vp)
    with np.errstate(over="ignore"):
        g = np.exp(_parabola_value(lm, l0, lp, t))
    return np.where(pos, g, _parabola_value(vm, v0, vp, t))


def _safe(v):
    return np.where(v != 0, v, 1e-30)


def _min_separation(x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Greedy non-maximum suppression: inputs sorted by decreasing priority."""
    n = x.size
    keep = np.ones(n, dtype=bool)
    if n < 2 or r <= 0:
        return keep
    from scipy.spatial import cKDTree

    tree = cKDTree(np.column_stack([x, y]).astype(np.float64))
    for i in range(n):
        if not keep[i]:
            continue
        for j in tree.query_ball_point((x[i], y[i]), r):
            if j > i:
                keep[j] = False
    return keep


def expected_false_positives(S_corr: Array, threshold: float, area: float | None = None,
                             two_sided: bool = True) -> float:
    """Expected number of noise peaks above ``threshold`` in a smooth unit-variance
    Gaussian random field, from the Euler characteristic of its excursion set
    (Adler 1981): ``area * lambda / (2 pi)^(3/2) * u * exp(-u^2 / 2)``, where ``lambda``
    is the variance of the field's gradient per axis (measured from ``S_corr`` itself with
    central differences, as (1.4826 MAD)^2 so that real sources do not inflate it; it
    reflects the actual PSF-sized correlation) and ``area`` (pixels, default the whole
    map). Doubled for ``two_sided``.
    """
    from skybatch.imaging._util import median

    xp = get_namespace(S_corr)
    s = S_corr
    gx = (s[1:-1, 2:] - s[1:-1, :-2]) * 0.5
    gy = (s[2:, 1:-1] - s[:-2, 1:-1]) * 0.5
    lam = 0.5 * sum((1.4826 * median(xp, xp.abs(g - median(xp, g)))) ** 2 for g in (gx, gy))
    area = float(s.shape[0] * s.shape[1]) if area is None else float(area)
    u = float(threshold)
    n = area * lam / (2.0 * math.pi) ** 1.5 * u * math.exp(-0.5 * u * u)
    return 2.0 * n if two_sided else n
