"""Source detection for PSF estimation: ``sep`` on NumPy, a local-maximum finder on other namespaces."""

from __future__ import annotations

from typing import Any

import numpy as np

from skybatch.imaging._util import dilate, gather, local_maxima
from skybatch.xp import get_namespace, is_numpy_namespace, to_numpy

Array = Any

__all__ = ["find_stars"]


def find_stars(
    image: Array,
    sigma: float | Array,
    *,
    threshold: float = 5.0,
    mask: Array | None = None,
    minarea: int = 5,
) -> dict[str, np.ndarray]:
    """Detect sources on a background-subtracted image; returns a host catalogue.

    Parameters
    ----------
    image : (ny, nx) background-subtracted image.
    sigma : background noise (scalar or (ny, nx) map), same units.
    threshold : detection threshold in units of ``sigma``.
    mask : optional boolean (ny, nx), True = ignore.

    Returns
    -------
    dict of NumPy arrays: ``x``, ``y`` (0-based pixel coordinates, pixel centres on
    integers), ``flux`` (isophotal), ``peak`` (maximum pixel), ``r_half`` (half-light
    radius, px), ``flag`` (0 = clean; sep flags on the NumPy path).
    """
    xp = get_namespace(image)
    if is_numpy_namespace(xp):
        return _find_stars_sep(image, sigma, threshold, mask, minarea)
    return _find_stars_xp(xp, image, sigma, threshold, mask)


def _find_stars_sep(image, sigma, threshold, mask, minarea) -> dict[str, np.ndarray]:
    import sep

    data = np.ascontiguousarray(image, dtype=np.float32)
    err = sigma if np.isscalar(sigma) else np.ascontiguousarray(sigma, dtype=np.float32)
    m = None if mask is None else np.ascontiguousarray(mask, dtype=bool)
    data = np.where(np.isfinite(data), data, 0.0).astype(np.float32)
    objs = None
    pixstack = sep.get_extract_pixstack()
    for _ in range(4):
        try:
            objs = sep.extract(data, threshold, err=err, mask=m, minarea=minarea)
            break
        except Exception as exc:  # sep: "internal pixel buffer full" / deblend overflow
            if "buffer full" in str(exc) or "pixstack" in str(exc):
                pixstack *= 4
                sep.set_extract_pixstack(pixstack)
                continue
            if "deblend" in str(exc):
                sep.set_sub_object_limit(4 * sep.get_sub_object_limit())
                continue
            raise
    if objs is None or len(objs) == 0:
        return {k: np.zeros(0) for k in ("x", "y", "flux", "peak", "r_half", "flag")}
    x = np.asarray(objs["x"], dtype=np.float64)
    y = np.asarray(objs["y"], dtype=np.float64)
    r_est = np.clip(3.0 * np.sqrt(objs["a"] * objs["b"]), 2.0, 50.0)
    r_half, rflag = sep.flux_radius(data, x, y, 2.0 * r_est, 0.5, subpix=5)
    return {
        "x": x,
        "y": y,
        "flux": np.asarray(objs["flux"], dtype=np.float64),
        "peak": np.asarray(objs["peak"], dtype=np.float64),
        "r_half": np.asarray(r_half, dtype=np.float64),
        "flag": (np.asarray(objs["flag"]).astype(np.int64) | np.asarray(rflag).astype(np.int64)),
    }


def _find_stars_xp(xp, image, sigma, threshold, mask) -> dict[str, np.ndarray]:
    """Array-API fallback: peaks of the 3x3-smoothed S/N image, moments in 7x7 boxes."""
    img = xp.where(xp.isfinite(image), image, 0.0)
    ny, nx = img.shape
    sm = xp.zeros_like(img)
    sm[1:-1, 1:-1] = (
        4 * img[1:-1, 1:-1]
        + 2 * (img[:-2, 1:-1] + img[2:, 1:-1] + img[1:-1, :-2] + img[1:-1, 2:])
        + (img[:-2, :-2] + img[:-2, 2:] + img[2:, :-2] + img[2:, 2:])
    ) / 16.0
    # noise of the 3x3 [1 2 1]^2/16 filter: sigma * sqrt(sum w^2) = sigma * 0.375
    snr = sm / (xp.asarray(sigma, dtype=img.dtype) * 0.375)
    valid = None if mask is None else ~dilate(xp, xp.asarray(mask), 1)
    peaks = local_maxima(xp, snr, threshold, valid)
    idx = np.flatnonzero(to_numpy(xp.reshape(peaks, (-1,))))
    iy, ix = idx // nx, idx % nx
    keep = (iy >= 3) & (iy < ny - 3) & (ix >= 3) & (ix < nx - 3)
    iy, ix = iy[keep], ix[keep]
    if iy.size == 0:
        return {k: np.zeros(0) for k in ("x", "y", "flux", "peak", "r_half", "flag")}
    offs = np.arange(-3, 4)
    oy, ox = np.meshgrid(offs, offs, indexing="ij")
    box = gather(xp, img, (iy[:, None, None] + oy).ravel(), (ix[:, None, None] + ox).ravel())
    box = box.reshape(iy.size, 7, 7)
    pos = np.clip(box, 0.0, None)
    tot = pos.sum(axis=(1, 2)) + 1e-30
    cy = (pos * oy).sum(axis=(1, 2)) / tot
    cx = (pos * ox).sum(axis=(1, 2)) / tot
    var = 0.5 * ((pos * (oy - cy[:, None, None]) ** 2).sum(axis=(1, 2)) + (pos * (ox - cx[:, None, None]) ** 2).sum(axis=(1, 2))) / tot
    r_half = 1.1774 * np.sqrt(np.maximum(var, 1e-6))
    return {
        "x": ix + cx,
        "y": iy + cy,
        "flux": box.sum(axis=(1, 2)),
        "peak": box.max(axis=(1, 2)),
        "r_half": r_half,
        "flag": np.zeros(iy.size, dtype=np.int64),
    }
