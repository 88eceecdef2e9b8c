"""Measured properties of difference-image candidates (the features a real/bogus classifier uses).

:func:`candidate_properties` measures, per candidate at (x, y) on the science grid:

- ``fwhm`` (px) and ``elongation`` (major / minor axis), ``theta`` (deg, x towards y): Gaussian-
  windowed second moments of the sign-corrected difference image D (window sigma = that of
  D's PSF ``P_D``), corrected for the window (exact for Gaussian profiles). A point source
  has D's PSF FWHM and elongation ~1; cosmic rays and hot pixels are narrower, streaks and
  bleed residuals elongated. NaN when the stamp holds no positive signal.
- ``dipole`` in [0, 1]: min(P, N) / max(P, N) of the positive and negative significance
  (|S_corr| > 3) within 2 FWHM: 0 for a clean point source, ~1 for a misregistration dipole.
- ``masked_fraction``: masked (bad or saturated) pixels in the ``stamp`` x ``stamp`` box.
- ``ref_distance`` (px): distance to the nearest source detected in the reference image
  (``sep.extract`` at ``ref_threshold`` sigma; inf when none): variable stars and nuclear
  transients sit on one, hostless transients do not.
- ``ref_flux`` : that source's flux (reference counts, NaN when none).

The candidate's flux from PSF photometry on D is ZOGY's ``F_psf`` (``flux``, ``flux_err``
of :func:`~skybatch.imaging.detect.detect_candidates`: the matched filter of D with its PSF
is the PSF-fit flux). Host-side NumPy (candidate tables are small); sep for the reference
catalogue (a mesh-free local-maximum finder when sep is not wanted, ``use_sep=False``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PROPERTY_COLUMNS", "candidate_properties", "reference_sources"]

PROPERTY_COLUMNS = ("fwhm", "elongation", "theta", "dipole", "masked_fraction", "ref_distance", "ref_flux")
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _stamps(img: np.ndarray, ix: np.ndarray, iy: np.ndarray, h: int, fill: float = 0.0) -> np.ndarray:
    """(n, 2h+1, 2h+1) stamps centred on integer pixels; outside the image = ``fill``."""
    ny, nx = img.shape
    pad = np.pad(img, h, mode="constant", constant_values=fill)
    off = np.arange(-h, h + 1)
    gy = iy[:, None, None] + h + off[None, :, None]
    gx = ix[:, None, None] + h + off[None, None, :]
    gy = np.clip(gy, 0, ny + 2 * h - 1)
    gx = np.clip(gx, 0, nx + 2 * h - 1)
    return pad[gy, gx]


def reference_sources(ref: np.ndarray, bad: np.ndarray | None = None, threshold: float = 5.0,
                      use_sep: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, flux) of the sources of a background-subtracted reference image (NaN = no data)."""
    img = np.asarray(ref, dtype=np.float32)
    m = ~np.isfinite(img)
    if bad is not None:
        m |= np.asarray(bad, bool)
    good = img[~m]
    if good.size < 16:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    sigma = float(1.4826 * np.median(np.abs(good - np.median(good))))
    if not sigma > 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    data = np.ascontiguousarray(np.where(m, 0.0, img), dtype=np.float32)
    if use_sep:
        import sep

        sep.set_extract_pixstack(max(300000, data.size))
        try:
            cat = sep.extract(data, threshold, err=sigma, mask=m, minarea=3)
            return np.asarray(cat["x"], float), np.asarray(cat["y"], float), np.asarray(cat["flux"], float)
        except Exception:  # sep gives up on pathological images (too many pixels above threshold)
            pass
    from scipy import ndimage as ndi

    sm = ndi.uniform_filter(data, 3)
    peaks = (sm == ndi.maximum_filter(sm, 5)) & (sm > threshold * sigma / 3.0) & ~m
    yy, xx = np.nonzero(peaks)
    return xx.astype(float), yy.astype(float), data[yy, xx].astype(float) * 9.0


def candidate_properties(D: np.ndarray, S_corr: np.ndarray, x: np.ndarray, y: np.ndarray, sign: np.ndarray, *,
                         psf_fwhm: float, masked: np.ndarray | None = None, ref: np.ndarray | None = None,
                         ref_bad: np.ndarray | None = None, stamp: int = 31, ref_threshold: float = 5.0,
                         use_sep: bool = True) -> dict[str, np.ndarray]:
    """Properties of candidates (see the module docstring); one float64 array per :data:`PROPERTY_COLUMNS`.

    D, S_corr: (ny, nx) difference image and its significance (NaN = no data).
    x, y: candidate positions (px, 0-based); sign: +1 brightening, -1 fading (D is flipped).
    psf_fwhm: FWHM (px) of D's PSF (the moment window). masked: (ny, nx) bool, bad or
    saturated. ref: background-subtracted reference on the science grid (NaN = no data),
    for ``ref_distance`` / ``ref_flux``; ref_bad: its bad pixels. stamp: odd box for
    ``masked_fraction``.
    """
    n = int(np.size(x))
    out = {k: np.full(n, np.nan) for k in PROPERTY_COLUMNS}
    if n == 0:
        return out
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    sign = np.asarray(sign, float)
    ix, iy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    fw = float(psf_fwhm) if psf_fwhm and np.isfinite(psf_fwhm) and psf_fwhm > 0 else 3.0
    sw = fw / _FWHM_PER_SIGMA
    h = max(3, int(math.ceil(2.0 * fw)))
    d = np.nan_to_num(np.asarray(D, np.float64), nan=0.0)
    st = _stamps(d, ix, iy, h) * sign[:, None, None]
    off = np.arange(-h, h + 1, dtype=float)
    dx = off[None, None, :] - (x - ix)[:, None, None]
    dy = off[None, :, None] - (y - iy)[:, None, None]
    w = np.exp(-0.5 * (dx * dx + dy * dy) / (sw * sw)) * np.clip(st, 0.0, None)
    tot = w.sum(axis=(1, 2))
    ok = tot > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * dx).sum(axis=(1, 2)) / tot
        my = (w * dy).sum(axis=(1, 2)) / tot
        ddx, ddy = dx - mx[:, None, None], dy - my[:, None, None]
        ixx = (w * ddx * ddx).sum(axis=(1, 2)) / tot
        iyy = (w * ddy * ddy).sum(axis=(1, 2)) / tot
        ixy = (w * ddx * ddy).sum(axis=(1, 2)) / tot
        tr, det = ixx + iyy, ixx * iyy - ixy * ixy
        disc = np.sqrt(np.clip(tr * tr / 4.0 - det, 0.0, None))
        l1, l2 = tr / 2.0 + disc, np.clip(tr / 2.0 - disc, 1e-6, None)
        # undo the Gaussian window: 1/s^2 = 1/m^2 - 1/w^2 (a measured width at the window's is unresolved-wide)
        w2 = sw * sw

        def deconv(m2: np.ndarray) -> np.ndarray:
            return np.where(m2 < 0.95 * w2, m2 * w2 / (w2 - m2), 20.0 * w2)

        a2, b2 = deconv(l1), deconv(l2)
        out["fwhm"] = np.where(ok, _FWHM_PER_SIGMA * np.sqrt(0.5 * (a2 + b2)), np.nan)
        out["elongation"] = np.where(ok, np.sqrt(a2 / b2), np.nan)
        out["theta"] = np.where(ok, np.degrees(0.5 * np.arctan2(2.0 * ixy, ixx - iyy)), np.nan)

    s = np.nan_to_num(np.asarray(S_corr, np.float64), nan=0.0)
    ss = _stamps(s, ix, iy, h)
    r = np.hypot(off[None, None, :] - (x - ix)[:, None, None], off[None, :, None] - (y - iy)[:, None, None])
    inside = r <= 2.0 * fw
    pos = np.where(inside & (ss > 3.0), ss, 0.0).sum(axis=(1, 2))
    neg = np.where(inside & (ss < -3.0), -ss, 0.0).sum(axis=(1, 2))
    big = np.maximum(pos, neg)
    out["dipole"] = np.where(big > 0, np.minimum(pos, neg) / np.where(big > 0, big, 1.0), 0.0)

    if masked is not None:
        hm = stamp // 2
        mk = _stamps(np.asarray(masked, np.float64), ix, iy, hm, fill=1.0)
        out["masked_fraction"] = mk.mean(axis=(1, 2))
    if ref is not None:
        rx, ry, rf = reference_sources(ref, ref_bad, ref_threshold, use_sep)
        if rx.size:
            from scipy.spatial import cKDTree

            dist, j = cKDTree(np.column_stack([rx, ry])).query(np.column_stack([x, y]))
            out["ref_distance"] = np.asarray(dist, float)
            out["ref_flux"] = rf[j]
        else:
            out["ref_distance"] = np.full(n, np.inf)
    return out
