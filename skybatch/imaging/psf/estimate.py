"""PSF estimation from isolated, unsaturated stars (:func:`estimate_psf`), with the Gaussian fallbacks
the package docstring describes."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from skybatch.imaging._util import as_images, gather
from skybatch.imaging.psf.models import (
    FWHM_PER_SIGMA,
    _grid,
    default_psf_size,
    gaussian_psf,
    psf_fwhm,
    shift_stamps,
)
from skybatch.imaging.psf.stars import find_stars
from skybatch.xp import is_numpy_namespace, to_numpy

Array = Any

__all__ = ["PSFEstimate", "PSFFallbackWarning", "estimate_psf"]


class PSFFallbackWarning(UserWarning):
    """Too few usable stars: the PSF is a Gaussian fallback (see ``PSFEstimate.method``)."""


@dataclass(frozen=True)
class PSFEstimate:
    """Result of :func:`estimate_psf`.

    Attributes
    ----------
    psf : (m, m) stamp, unit sum, centre on pixel [m//2, m//2]; same namespace as the image.
    method : "stack" (clipped weighted stack of star stamps), "gaussian-measured" or
        "gaussian-default".
    n_stars : stars stacked (0 for the fallbacks).
    fwhm : FWHM of the returned PSF in pixels (:func:`psf_fwhm` for "stack").
    message : why a fallback was used, else "".
    """

    psf: Array
    method: str
    n_stars: int
    fwhm: float
    message: str = ""


def _fallback(xp, dt, fwhm, size, method, message) -> PSFEstimate:
    warnings.warn(f"{message}; using a {method} Gaussian PSF of FWHM {fwhm:.2f} px", PSFFallbackWarning, stacklevel=3)
    size = default_psf_size(fwhm) if size is None else size
    return PSFEstimate(gaussian_psf(fwhm, size, xp=xp, dtype=dt), method, 0, float(fwhm), message)


def estimate_psf(
    image: Array,
    sigma: float | Array,
    *,
    size: int | None = None,
    saturation: float | None = None,
    mask: Array | None = None,
    threshold: float = 5.0,
    min_snr: float = 20.0,
    isolation: float | None = None,
    min_stars: int = 5,
    max_stars: int = 300,
    default_fwhm: float = 3.0,
    dtype: Any = "float32",
) -> PSFEstimate:
    """Estimate a PSF stamp from the stars of a background-subtracted image.

    Parameters
    ----------
    image : (ny, nx) background-subtracted image (ADU).
    sigma : background noise, scalar or (ny, nx) map (ADU).
    size : odd stamp size; default ``default_psf_size(fwhm)`` from the measured FWHM.
    saturation : level (in the units of ``image`` as passed) at or above which a pixel is
        saturated; stars whose core reaches it are rejected. Subtract the background from
        the detector level when ``image`` is background subtracted.
    mask : boolean (ny, nx), True = bad pixel; stars touching one are rejected.
    threshold : detection threshold in sigma. ``min_snr``: minimum PSF-photometry S/N
        (flux / (sigma sqrt(4 pi) FWHM / 2.355)) of a PSF star.
    isolation : no other detection within this distance (px), default ``size // 2 + 2``;
        and no neighbour brighter than 10% of the star within the stamp.
    min_stars : fewer usable stars than this -> Gaussian fallback (see module docstring).
    max_stars : stack at most this many (the brightest unsaturated).
    default_fwhm : FWHM (px) of the last-resort Gaussian.

    Returns
    -------
    PSFEstimate
    """
    xp, dt, (img,) = as_images(dtype, image=image)
    img = xp.where(xp.isfinite(img), img, 0.0)
    ny, nx = img.shape
    cat = find_stars(img, sigma, threshold=threshold, mask=mask)
    n_found = cat["x"].size
    if n_found == 0:
        return _fallback(xp, dt, default_fwhm, size, "gaussian-default", "no sources detected")

    sig_at: np.ndarray | float = (np.asarray(to_numpy(sigma), dtype=np.float64) if not np.isscalar(sigma)
              else float(np.asarray(sigma, dtype=np.float64)))
    ix = np.clip(np.rint(cat["x"]).astype(np.int64), 0, nx - 1)
    iy = np.clip(np.rint(cat["y"]).astype(np.int64), 0, ny - 1)
    s_loc = sig_at if isinstance(sig_at, float) else sig_at[iy, ix]
    clean = (cat["flag"] == 0) & (cat["r_half"] > 0.3) & np.isfinite(cat["r_half"])
    if not np.any(clean):
        return _fallback(xp, dt, default_fwhm, size, "gaussian-default", "no clean source with a measurable size")

    # FWHM from the point-like locus: bright-ish clean sources, smallest-size mode.
    snr_iso = cat["flux"] / (s_loc * np.sqrt(np.pi * np.maximum(2.0 * cat["r_half"], 1.0) ** 2))
    sel = clean & (snr_iso > 10)
    if not np.any(sel):
        sel = clean
    rh = cat["r_half"][sel]
    r_star = float(np.median(rh[rh <= np.median(rh)]))  # lower half: stars, not galaxies
    fwhm_meas = 2.0 * r_star
    size = default_psf_size(fwhm_meas) if size is None else int(size)
    if size % 2 == 0:
        raise ValueError(f"size={size}: PSF stamps must have an odd size")
    h = size // 2
    iso = float(h + 2) if isolation is None else float(isolation)

    cand = clean.copy()
    cand &= (iy >= h + 1) & (iy < ny - h - 1) & (ix >= h + 1) & (ix < nx - h - 1)
    # isolation: no detection at all within `iso`, and no neighbour brighter than 10% of
    # the star anywhere on its stamp (faint neighbours further out are removed by the median)
    if n_found > 1:
        from scipy.spatial import cKDTree

        pts = np.column_stack([cat["x"], cat["y"]])
        tree = cKDTree(pts)
        reach = max(iso, math.sqrt(2.0) * (h + 1))
        for i in np.flatnonzero(cand):
            for j in tree.query_ball_point(pts[i], reach):
                if j == i:
                    continue
                d = math.hypot(pts[j, 0] - pts[i, 0], pts[j, 1] - pts[i, 1])
                if d < iso or cat["flux"][j] > 0.1 * cat["flux"][i]:
                    cand[i] = False
                    break
    # point-like: half-light radius close to the stellar locus
    cand &= np.abs(cat["r_half"] - r_star) < max(0.2 * r_star, 0.3)
    if not np.any(cand):
        return _fallback(xp, dt, fwhm_meas, size, "gaussian-measured", f"no isolated point-like star among {n_found} sources")

    # stamps (with a 1-pixel margin for the sub-pixel shift)
    ci = np.flatnonzero(cand)
    mm = size + 2
    offs = np.arange(-(mm // 2), mm // 2 + 1)
    oy, ox = np.meshgrid(offs, offs, indexing="ij")
    gy = (iy[ci, None, None] + oy).ravel()
    gx = (ix[ci, None, None] + ox).ravel()
    stamps = gather(xp, img, gy, gx).reshape(ci.size, mm, mm)
    ok = np.ones(ci.size, dtype=bool)
    if saturation is not None:
        core = (np.abs(oy) <= 2) & (np.abs(ox) <= 2)
        ok &= stamps[:, core].max(axis=1) < float(saturation)
    if mask is not None:
        mvals = gather(xp, xp.astype(xp.asarray(mask), dt), gy, gx).reshape(ci.size, mm, mm)
        ok &= mvals.max(axis=(1, 2)) == 0
    flux = stamps.sum(axis=(1, 2))
    s_c = s_loc if isinstance(s_loc, float) else s_loc[ci]
    snr = flux / (s_c * math.sqrt(4.0 * math.pi) * fwhm_meas / FWHM_PER_SIGMA)
    ok &= snr >= min_snr
    # flat-topped (saturated or non-linear) cores even without a saturation level: the
    # peak-to-flux ratio of a clean star is the PSF's (within ~25% for sub-pixel offsets)
    peak_frac = stamps.max(axis=(1, 2)) / np.where(flux > 0, flux, np.inf)
    if np.any(ok):
        ok &= peak_frac > 0.7 * np.median(peak_frac[ok])
    ci, stamps, flux = ci[ok], stamps[ok], flux[ok]
    s_c = s_c if isinstance(s_c, float) else s_c[ok]
    if ci.size < min_stars:
        return _fallback(
            xp, dt, fwhm_meas, size, "gaussian-measured",
            f"only {ci.size} usable PSF stars (isolated, unsaturated, S/N >= {min_snr}; need {min_stars})",
        )
    order = np.argsort(-flux)[:max_stars]
    ci, stamps, flux = ci[order], stamps[order], flux[order]
    s_c = s_c if isinstance(s_c, float) else s_c[order]

    # sub-pixel centring: windowed centroids, then Fourier shift to the stamp centre
    x0, y0 = cat["x"][ci], cat["y"][ci]
    if is_numpy_namespace(xp):
        import sep

        xw, yw, wflag = sep.winpos(np.ascontiguousarray(to_numpy(img), dtype=np.float32), x0, y0, fwhm_meas / FWHM_PER_SIGMA)
        good = (wflag == 0) & (np.abs(xw - x0) < 1.5) & (np.abs(yw - y0) < 1.5)
        x0 = np.where(good, xw, x0)
        y0 = np.where(good, yw, y0)
    else:  # same windowed algorithm on the host copies of the stamps
        wdx, wdy = _windowed_centroid(stamps, fwhm_meas / FWHM_PER_SIGMA)
        x0, y0 = ix[ci] + wdx, iy[ci] + wdy
    dx = x0 - ix[ci]
    dy = y0 - iy[ci]
    st = xp.asarray((stamps / flux[:, None, None]).astype(np.float32 if dt == xp.float32 else np.float64))
    st = shift_stamps(xp, st, -dx, -dy)
    noise = np.broadcast_to(np.asarray(s_c, dtype=np.float64) / flux, flux.shape)
    # star-level outlier rejection (blends, bad centring, variables with a bad pixel):
    # chi^2 of each stamp against the median inside 2 FWHM, clipped in log space
    med = _median_axis0(xp, st)
    r_core = 2.0 * fwhm_meas
    core = ((oy**2 + ox**2) <= r_core * r_core).astype(np.float64)
    diff = np.asarray(to_numpy(st - med[None, ...]), dtype=np.float64)
    med_noise2 = 1.57 * np.mean(noise**2) / noise.size  # variance of the median stack
    chi2 = (diff**2 * core).sum(axis=(1, 2)) / (noise**2 + med_noise2) / core.sum()
    lc = np.log(np.maximum(chi2, 1e-30))
    mad = 1.4826 * np.median(np.abs(lc - np.median(lc)))
    good_star = lc <= np.median(lc) + 3.0 * max(mad, 0.1)
    if good_star.sum() >= min_stars and not good_star.all():
        sel_idx = xp.asarray(np.flatnonzero(good_star))
        st = xp.take(st, sel_idx, axis=0)
        noise = noise[good_star]
        ci = ci[good_star]
    stack = _combine_stamps(xp, st, np.ascontiguousarray(noise))[1:-1, 1:-1]
    psf = _clean_psf(xp, _smooth_wings(xp, stack, fwhm_meas))
    return PSFEstimate(psf, "stack", int(ci.size), psf_fwhm(psf), "")


def _windowed_centroid(stamps: np.ndarray, sig: float, n_iter: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-windowed centroids (like SExtractor's XWIN) of host stamps (n, m, m),
    as offsets from the stamp centres."""
    n, m, _ = stamps.shape
    h = m // 2
    yy, xx = np.mgrid[-h : h + 1, -h : h + 1].astype(np.float64)
    cx = np.zeros(n)
    cy = np.zeros(n)
    sig = max(sig, 0.5)
    for _ in range(n_iter):
        r2 = (xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2
        w = np.exp(-0.5 * r2 / (sig * sig)) * (r2 < (4 * sig) ** 2) * stamps
        tot = w.sum(axis=(1, 2))
        tot = np.where(tot > 0, tot, 1.0)
        ncx = np.clip(2.0 * (w * (xx[None] - cx[:, None, None])).sum(axis=(1, 2)) / tot + cx, -1.5, 1.5)
        ncy = np.clip(2.0 * (w * (yy[None] - cy[:, None, None])).sum(axis=(1, 2)) / tot + cy, -1.5, 1.5)
        done = max(np.abs(ncx - cx).max(), np.abs(ncy - cy).max()) < 1e-4
        cx, cy = ncx, ncy
        if done:
            break
    return cx, cy


def _combine_stamps(xp: ModuleType, st: Array, noise: np.ndarray, clip: float = 5.0) -> Array:
    """Clipped inverse-variance mean of unit-flux stamps (n, m, m).

    ``noise`` (n,) is each normalised stamp's background sigma per pixel. Pixels further
    than ``clip`` x (noise + 3% of the median) from the per-pixel median (neighbours,
    cosmic rays, bad centring) are dropped; the rest are averaged with weights
    1 / noise^2 capped at 4x the median weight, so bright stars count most but a few of
    them cannot dominate.
    """
    med = _median_axis0(xp, st)
    nz = xp.reshape(xp.asarray(noise.astype(np.float32 if st.dtype == xp.float32 else np.float64)), (-1, 1, 1))
    tol = (nz + 0.03 * xp.abs(med)[None, :, :]) * clip
    ok = xp.abs(st - med[None, :, :]) <= tol
    # cap the weights at 4x the median star's so a few bright stars cannot dominate
    w_star = 1.0 / (noise * noise)
    w_star = np.minimum(w_star, 4.0 * np.median(w_star))
    wz = xp.reshape(xp.asarray(w_star.astype(np.float32 if st.dtype == xp.float32 else np.float64)), (-1, 1, 1))
    w = xp.where(ok, wz, 0.0)
    wsum = xp.sum(w, axis=0)
    mean = xp.sum(w * st, axis=0) / xp.where(wsum > 0, wsum, 1.0)
    return xp.where(wsum > 0, mean, med)


def _median_axis0(xp: ModuleType, a: Array) -> Array:
    if is_numpy_namespace(xp):
        return np.median(a, axis=0)
    s = xp.sort(a, axis=0)
    n = a.shape[0]
    return s[n // 2, ...] if n % 2 else 0.5 * (s[n // 2 - 1, ...] + s[n // 2, ...])


def _smooth_wings(xp: ModuleType, stack: Array, fwhm: float) -> Array:
    """Replace the stack's wings by their azimuthal mean, blended in from 1 to 2 FWHM.

    Out there the stack is dominated by its own noise (and faint neighbours): a bright star
    differenced with it leaves a ring at the level of that noise times the star's flux
    (~0.1 % of the flux per pixel is already many sigma for a star of S/N 1000). Averaging
    over azimuth cuts that noise by ~sqrt(2 pi r) where PSFs are close to circular anyway;
    the core, where any ellipticity lives, is kept as stacked.
    """
    a = np.asarray(to_numpy(stack), dtype=np.float64)
    my, mx = a.shape
    yy, xx = np.mgrid[: my, : mx]
    r = np.hypot(yy - my // 2, xx - mx // 2)
    edges = np.arange(0.0, r.max() + 1.0, 0.5)
    idx = np.digitize(r.ravel(), edges) - 1
    cnt = np.bincount(idx, minlength=edges.size)
    mean_r = np.bincount(idx, weights=r.ravel(), minlength=edges.size)
    mean_v = np.bincount(idx, weights=a.ravel(), minlength=edges.size)
    has = cnt > 0
    prof = np.interp(r, mean_r[has] / cnt[has], mean_v[has] / cnt[has])
    t = np.clip((r - 1.0 * fwhm) / fwhm, 0.0, 1.0)
    out = (1.0 - t) * a + t * prof
    return xp.asarray(out.astype(np.float32 if stack.dtype == xp.float32 else np.float64))


def _clean_psf(xp: ModuleType, stack: Array) -> Array:
    """Taper the noisy wings, re-centre on the centroid, unit sum.

    Negative pixels are kept (clipping them would bias the wings positive, i.e. make the
    PSF too broad); a cosine taper from 70% to 100% of the stamp half-width removes the
    stamp-edge noise. The centroid is measured inside the half-width.
    """
    m = stack.shape[0]
    h = m // 2
    yy, xx = _grid(xp, m, 0.0, 0.0, stack.dtype)
    r = xp.sqrt(yy * yy + xx * xx)
    r0, r1 = 0.7 * (h + 0.5), h + 0.5
    t = xp.clip((r - r0) / (r1 - r0), 0.0, 1.0)
    taper = 0.5 * (1.0 + xp.cos(t * math.pi))
    p = stack * taper
    core = xp.where(r <= r0, xp.where(p > 0, p, 0.0), 0.0)
    tot = xp.sum(core)
    cy, cx = float(xp.sum(core * yy) / tot), float(xp.sum(core * xx) / tot)
    if abs(cx) > 1e-3 or abs(cy) > 1e-3:
        p = shift_stamps(xp, xp.reshape(p, (1, m, m)), [-cx], [-cy])[0, ...] * taper
    return p / xp.sum(p)
