"""Inject point sources of known flux into images and measure their recovery.

:func:`inject_point_sources` renders a PSF stamp at sub-pixel positions
(Fourier shift of the stamp) and adds ``flux`` times it to a copy of the image,
optionally with Poisson noise for the injected counts. :func:`recovery` matches
detections to injections and reports completeness in S/N bins and false
positives per megapixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Sequence

import numpy as np

from skybatch.imaging._util import float_dtype, gather, normalise_psf
from skybatch.imaging.psf import shift_stamps
from skybatch.xp import get_namespace, to_numpy

Array = Any

__all__ = ["inject_point_sources", "expected_snr", "recovery", "Recovery"]


def inject_point_sources(
    image: Array,
    psf: Array,
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    flux: Sequence[float] | np.ndarray,
    *,
    gain: float | None = None,
    seed: int | None = None,
    dtype: Any = "float32",
) -> Array:
    """A copy of ``image`` with point sources added.

    Parameters
    ----------
    image : (ny, nx) image (ADU).
    psf : odd PSF stamp centred on its middle pixel (normalised to unit sum here).
    x, y : (n,) positions, 0-based pixel coordinates (centres on integers; x = column).
    flux : (n,) total counts (ADU) of each source (within the stamp).
    gain : e-/ADU; when given, each injected source gets Poisson noise
        ``(Poisson(flux * psf * gain) - flux * psf * gain) / gain``.
    seed : random seed for that noise.

    Returns
    -------
    (ny, nx) array, same namespace as ``image``. Parts of stamps outside the image are
    dropped (their flux is lost; keep injections a stamp away from the edges).
    """
    xp = get_namespace(image, psf)
    dt = float_dtype(xp, dtype)
    out = xp.astype(xp.asarray(image), dt, copy=True)
    ny, nx = out.shape
    p = normalise_psf(xp, psf, dt, "psf")
    m = p.shape[0]
    if p.shape[0] != p.shape[1]:
        raise ValueError(f"psf must be square; got {tuple(p.shape)}")
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    flux = np.asarray(flux, dtype=np.float64).ravel()
    if not (x.size == y.size == flux.size):
        raise ValueError(f"x, y and flux must have the same length; got {x.size}, {y.size}, {flux.size}")
    if x.size == 0:
        return out
    ix, iy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    # pad the stamp by 2 px so the Fourier shift does not wrap the PSF wings
    mp = m + 4
    pad = xp.zeros((mp, mp), dtype=dt)
    pad[2 : 2 + m, 2 : 2 + m] = p
    stamps = shift_stamps(xp, xp.broadcast_to(pad[None, :, :], (x.size, mp, mp)), x - ix, y - iy)
    stamps = stamps / xp.reshape(xp.sum(stamps, axis=(1, 2)), (-1, 1, 1))
    stamps = stamps * xp.reshape(xp.asarray(flux, dtype=dt), (-1, 1, 1))
    if gain is not None:
        if not gain > 0:
            raise ValueError(f"gain must be positive (e-/ADU); got {gain}")
        rng = np.random.default_rng(seed)
        host = np.asarray(to_numpy(stamps), dtype=np.float64)
        lam = np.clip(host, 0.0, None) * gain
        noise = (rng.poisson(lam) - lam) / gain
        stamps = stamps + xp.asarray(noise.astype(np.float32 if dt == xp.float32 else np.float64))
    h = mp // 2
    for k in range(x.size):
        y0, y1 = int(iy[k]) - h, int(iy[k]) + h + 1
        x0, x1 = int(ix[k]) - h, int(ix[k]) + h + 1
        sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, ny), max(x0, 0), min(x1, nx)
        if sy0 >= sy1 or sx0 >= sx1:
            continue
        out[sy0:sy1, sx0:sx1] += stamps[k, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
    return out


def expected_snr(result: Any, x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, flux: Sequence[float] | np.ndarray) -> np.ndarray:
    """Expected ZOGY S/N of sources of ``flux`` (new-image counts) at (x, y):
    ``flux / F_psf_err`` at the nearest pixel of a ZogyResult."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ny, nx = result.F_psf_err.shape
    ix = np.clip(np.rint(x).astype(np.int64), 0, nx - 1)
    iy = np.clip(np.rint(y).astype(np.int64), 0, ny - 1)
    xp = get_namespace(result.F_psf_err)
    return np.asarray(flux, dtype=np.float64) / gather(xp, result.F_psf_err, iy, ix)


@dataclass(frozen=True)
class Recovery:
    """Output of :func:`recovery`.

    Attributes
    ----------
    bins : pandas.DataFrame with ``snr_lo``, ``snr_hi``, ``n_injected``, ``n_recovered``,
        ``completeness`` per S/N bin.
    matched : pandas.DataFrame, one row per injection: ``snr``, ``recovered`` (bool),
        ``det_index`` (row of the detection table or -1), ``flux_true``, ``flux``,
        ``flux_err``, ``pull`` = (flux - flux_true) / flux_err, ``dx``, ``dy``.
    n_false : detections matching no injection (and no ``known`` position).
    false_per_mpix : ``n_false`` per million pixels of ``area``.
    """

    bins: Any
    matched: Any
    n_false: int
    false_per_mpix: float


def recovery(
    detections: Any,
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    flux: Sequence[float] | np.ndarray,
    snr: Sequence[float] | np.ndarray,
    *,
    area: float,
    radius: float = 2.0,
    snr_bins: Sequence[float] = (0, 3, 5, 8, 12, 20, 50, np.inf),
    known_x: Sequence[float] | None = None,
    known_y: Sequence[float] | None = None,
) -> Recovery:
    """Match detections to injected sources.

    Parameters
    ----------
    detections : table from :func:`~skybatch.imaging.detect.detect_candidates` (needs
        ``x``, ``y``, ``flux``, ``flux_err``, ``significance``).
    x, y, flux, snr : injected positions (px), fluxes (new-image counts) and expected
        S/N (e.g. :func:`expected_snr`).
    area : searched area in pixels (for false positives per megapixel).
    radius : match radius (px). Each detection matches at most one injection (the
        nearest, brightest-first), each injection at most one detection.
    snr_bins : edges of the S/N bins for completeness.
    known_x, known_y : positions of other real sources (e.g. known variables) whose
        detections are neither matches nor false positives.

    Returns
    -------
    Recovery
    """
    import pandas as pd
    from scipy.spatial import cKDTree

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    snr = np.asarray(snr, dtype=np.float64)
    dx_ = np.asarray(detections["x"], dtype=np.float64)
    dy_ = np.asarray(detections["y"], dtype=np.float64)
    n_det = dx_.size
    det_used = np.zeros(n_det, dtype=bool)
    det_index = np.full(x.size, -1, dtype=np.int64)
    if n_det and x.size:
        tree = cKDTree(np.column_stack([dx_, dy_]))
        for i in np.argsort(-snr):
            cands = [j for j in tree.query_ball_point((x[i], y[i]), radius) if not det_used[j]]
            if cands:
                d = [(dx_[j] - x[i]) ** 2 + (dy_[j] - y[i]) ** 2 for j in cands]
                j = cands[int(np.argmin(d))]
                det_used[j] = True
                det_index[i] = j
    if known_x is not None and n_det:
        kx, ky = np.asarray(known_x, float), np.asarray(known_y, float)
        if kx.size:
            ktree = cKDTree(np.column_stack([kx, ky]))
            near_known = np.array([len(v) > 0 for v in ktree.query_ball_point(np.column_stack([dx_, dy_]), radius)])
            det_used |= near_known
    rec = det_index >= 0
    det_flux = np.asarray(detections["flux"], dtype=np.float64) if n_det else np.zeros(0)
    det_err = np.asarray(detections["flux_err"], dtype=np.float64) if n_det else np.zeros(0)
    f = np.where(rec, det_flux[np.clip(det_index, 0, None)] if n_det else np.nan, np.nan)
    fe = np.where(rec, det_err[np.clip(det_index, 0, None)] if n_det else np.nan, np.nan)
    matched = pd.DataFrame({
        "x": x, "y": y, "snr": snr, "recovered": rec, "det_index": det_index,
        "flux_true": flux, "flux": f, "flux_err": fe, "pull": (f - flux) / fe,
        "dx": np.where(rec, dx_[np.clip(det_index, 0, None)] - x if n_det else np.nan, np.nan),
        "dy": np.where(rec, dy_[np.clip(det_index, 0, None)] - y if n_det else np.nan, np.nan),
    })
    edges = np.asarray(snr_bins, dtype=np.float64)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inb = (snr >= lo) & (snr < hi)
        n_in = int(inb.sum())
        n_rec = int((inb & rec).sum())
        rows.append({"snr_lo": lo, "snr_hi": hi, "n_injected": n_in, "n_recovered": n_rec,
                     "completeness": n_rec / n_in if n_in else np.nan})
    n_false = int((~det_used).sum())
    return Recovery(pd.DataFrame(rows), matched, n_false, n_false / (area / 1e6))
