"""Where detection on S_corr is not trusted: margins around bad regions and filled holes.

Two sources of residuals that look like transients and are not:

* **Cut sources.** Wide bad regions (sky the resampled reference does not cover, NaN borders,
  masked blocks) are zeroed in both images before ZOGY. A static source the edge cuts is cut
  differently by the two PSFs, and the residual reaches a P_D width from the edge. Sky without
  sources is cut harmlessly (its noise only drops near the edge). :func:`detection_margin`
  therefore keeps the full P_D-width margin only along the stretches of edge a reference source
  touches, and a narrow one (about a P_D FWHM) elsewhere, so transients in empty sky near a
  rotated reference's footprint edge are still found.
* **Filled holes on sources.** A hole filled from its neighbours (:mod:`skybatch.imaging.holes`)
  misses a peaked core's curvature; on a bright star the error shows in S_corr.
  :func:`fill_residual` bounds it in S_corr units from :func:`~skybatch.imaging.holes.fill_error`,
  and detection keeps out of where that bound exceeds :data:`FILL_RESIDUAL_MAX`.

Pure array functions (NumPy or CuPy).
"""

from __future__ import annotations

import math
from typing import Any

from skybatch.imaging._util import box_sum, dilate
from skybatch.imaging.holes import HOLE_WIDTH, split_bad
from skybatch.xp import get_namespace

Array = Any

__all__ = ["FILL_RESIDUAL_MAX", "EDGE_SOURCE_SNR", "fill_residual", "edge_sources", "detection_margin", "edge_grow_for"]

#: Detection keeps out of pixels where a filled hole may leave more than this in S_corr (sigma).
FILL_RESIDUAL_MAX = 1.0
#: A reference pixel whose 3x3 mean exceeds this many sigma (a 3x3 aperture S/N of 4.5) belongs
#: to a source: where such pixels lie within a PSF radius of a wide bad region, its edge cuts one.
EDGE_SOURCE_SNR = 1.5


def _value_at(xp: Any, sigma: float | Array, iy: Array, ix: Array) -> Array | float:
    if isinstance(sigma, (int, float)) or getattr(sigma, "ndim", 0) == 0:
        return float(sigma)
    return xp.asarray(sigma)[iy, ix]


def fill_residual(err_new: Array, err_ref: Array, flux_ratio: float, new_sigma: float | Array,
                  ref_sigma: float | Array, P_D: Array, *, floor: float = 0.25 * FILL_RESIDUAL_MAX) -> Array:
    """Upper bound (sigma, float (ny, nx)) of what filled holes leave in S_corr.

    err_new, err_ref: fill errors of the background-subtracted science and reference images
    (:func:`~skybatch.imaging.holes.fill_error`, image units, 0 off holes). flux_ratio: F_n/F_r;
    new_sigma, ref_sigma: background noise (scalar or (ny, nx) map); P_D: ZOGY's PSF of D.
    On D's white-noise scale a pixel error is (e_N + ratio e_R) / sqrt(s_N^2 + ratio^2 s_R^2);
    S_corr sees it through the matched filter P_D / sqrt(sum P_D^2). Holes whose peak bound is
    below ``floor`` are left out (pure-noise holes: about 0.2).
    """
    xp = get_namespace(err_new, err_ref)
    ny, nx = err_new.shape
    out = xp.zeros((ny, nx), dtype=xp.float32)
    iy, ix = xp.nonzero((err_new > 0) | (err_ref > 0))
    if int(iy.shape[0]) == 0:
        return out
    r = float(flux_ratio)
    sn, sr = _value_at(xp, new_sigma, iy, ix), _value_at(xp, ref_sigma, iy, ix)
    e = (err_new[iy, ix] + r * err_ref[iy, ix]) / xp.sqrt(sn**2 + (r * sr) ** 2)
    p = xp.asarray(P_D, dtype=xp.float32)
    peak = float(xp.max(p) / xp.sqrt(xp.sum(p * p)))  # S_corr of a unit-S/N pixel at its centre
    # the residual is N's and R's errors through filters of different widths: wider than P_D,
    # so its extent is taken as P_D's autocorrelation (sqrt(2) wider), at the same peak
    k = _autocorrelation(xp, p)
    k = k * (peak / float(xp.max(k)))
    keep = e * peak >= floor
    iy, ix, e = iy[keep], ix[keep], e[keep]
    if int(iy.shape[0]) == 0:
        return out
    hy, hx = k.shape[0] // 2, k.shape[1] // 2
    oy, ox = xp.meshgrid(xp.arange(-hy, hy + 1), xp.arange(-hx, hx + 1), indexing="ij")
    yy = iy[:, None] + oy.ravel()[None]
    xx = ix[:, None] + ox.ravel()[None]
    w = e[:, None] * k.ravel()[None]
    inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
    flat = (yy * nx + xx)[inside]
    acc = xp.bincount(flat, weights=w[inside].astype(xp.float64), minlength=ny * nx)
    return acc.reshape(ny, nx).astype(xp.float32)


def _autocorrelation(xp: Any, p: Array) -> Array:
    """P ⊗ P flipped, cropped to P's shape (direct sums: a stamp is small)."""
    hy, hx = p.shape[0] // 2, p.shape[1] // 2
    q = xp.pad(p, ((hy, hy), (hx, hx)))
    out = xp.zeros_like(p)
    for dy in range(-hy, hy + 1):
        for dx in range(-hx, hx + 1):
            out[dy + hy, dx + hx] = xp.sum(p * q[hy + dy : hy + dy + p.shape[0], hx + dx : hx + dx + p.shape[1]])
    return out


def _box_mean(xp: Any, a: Array, ok: Array) -> Array:
    """Mean of ``a`` over the ``ok`` pixels of each 3x3 box (0 where none is ok)."""
    s = box_sum(xp, xp.where(ok, a, 0.0), 1)
    n = box_sum(xp, ok.astype(a.dtype), 1)
    return s / xp.where(n > 0, n, 1.0)


def edge_sources(bad: Array, ref_snr: Array, psf_radius: int, *, min_width: int = HOLE_WIDTH,
                 snr: float = EDGE_SOURCE_SNR) -> Array:
    """Pixels of the wide bad regions whose edge cuts a reference source, boolean (ny, nx).

    bad: boolean (ny, nx); ref_snr: the background-subtracted reference over its noise
    (float (ny, nx), NaN where unknown); psf_radius: px within which a source's light reaches
    the edge (about 2.5 FWHM).
    """
    xp = get_namespace(bad, ref_snr)
    wide, _ = split_bad(bad, min_width)
    ok = xp.isfinite(ref_snr) & ~bad
    near = dilate(xp, wide, int(psf_radius)) & ok
    src = near & (_box_mean(xp, xp.where(ok, ref_snr, 0.0), ok) > snr)
    return wide & dilate(xp, src, int(psf_radius))


def detection_margin(bad: Array, cut: Array, *, cut_grow: int, edge_grow: int, hole_grow: int,
                     min_width: int = HOLE_WIDTH) -> Array:
    """Pixels where detection is not trusted, boolean (ny, nx).

    bad: boolean (ny, nx); cut: :func:`edge_sources` (edge pixels cutting a source). Wide bad
    regions are grown by ``edge_grow`` px, their source-cutting stretches by ``cut_grow`` (a
    P_D width), holes by ``hole_grow``.
    """
    xp = get_namespace(bad, cut)
    wide, holes = split_bad(bad, min_width)
    return dilate(xp, wide, int(edge_grow)) | dilate(xp, cut & wide, int(cut_grow)) | dilate(xp, holes, int(hole_grow))


def edge_grow_for(pd_fwhm: float, hole_grow: int) -> int:
    """The narrow margin (px) along wide bad regions that cut no source: a P_D FWHM, rounded up."""
    return max(int(hole_grow), int(math.ceil(pd_fwhm)))
