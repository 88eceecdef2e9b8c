"""Background and noise estimation for images.

On NumPy arrays :func:`estimate_background` uses ``sep.Background`` (SExtractor's
mesh algorithm: sigma-clipped mode per box, median-filtered mesh, bicubic
spline). On any other namespace (CuPy, array_api_strict) an xp fallback does the
same job in pure array code: a sigma-clipped median and standard deviation per
box, a 3x3 median filter of the mesh, and bilinear interpolation to full size.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from skybatch.imaging._util import as_image, as_images, dilate, float_dtype, median
from skybatch.xp import get_namespace, is_numpy_namespace

Array = Any

__all__ = ["Background", "estimate_background", "subtract_background", "noise_map"]


@dataclass(frozen=True)
class Background:
    """Smooth background model of one image.

    Attributes
    ----------
    background : (ny, nx) background level (image units).
    rms : (ny, nx) background noise sigma (image units).
    global_background, global_rms : scalar summaries (medians of the mesh).
    method : "sep" or "xp-mesh".
    sources : (ny, nx) bool, the source pixels masked in the second pass (None without one);
        reuse them to measure another background of the same image without a new extraction.
    """

    background: Array
    rms: Array
    global_background: float
    global_rms: float
    method: str
    sources: Array | None = None


def estimate_background(
    image: Array,
    *,
    mask: Array | None = None,
    box: int = 64,
    filter_size: int = 3,
    mask_sources: bool = True,
    source_threshold: float = 2.0,
    method: str = "auto",
    dtype: Any = "float32",
) -> Background:
    """Estimate the background level and noise of an image.

    Two passes when ``mask_sources``: a first background, then pixels of sources above
    ``source_threshold`` sigma (sep's segmentation on NumPy; elsewhere the 3x3-smoothed
    image above max(source_threshold, 3.5) sigma) dilated by 3 px are masked and the background is measured again.
    ``global_rms`` is then 1.4826 x the median absolute deviation of the
    background-subtracted, unmasked pixels (an unbiased sigma for Gaussian noise, more
    precise than the mesh): use it as ZOGY's scalar sigma.

    Parameters
    ----------
    image : (ny, nx) image (ADU); NaN/inf pixels are ignored (masked).
    mask : boolean (ny, nx), True = ignore (e.g. saturated or bad pixels).
    box : mesh box size in pixels (both axes). Larger than a few PSF FWHM, smaller than
        the scale of background variations.
    filter_size : median filter size over the mesh, in boxes (odd; 1 = none).
    mask_sources : mask detected sources and measure again (recommended; default True).
    source_threshold : detection threshold (sigma) of that source mask.
    method : "auto" (sep on NumPy, mesh fallback elsewhere), "sep" or "mesh".

    Returns
    -------
    Background
    """
    xp, dt, (img,) = as_images(dtype, image=image)
    if box < 4:
        raise ValueError(f"box={box}: the background mesh box must be at least 4 pixels")
    if method not in ("auto", "sep", "mesh"):
        raise ValueError(f"method={method!r}: use 'auto', 'sep' or 'mesh'")
    if filter_size < 1 or filter_size % 2 == 0:
        raise ValueError(f"filter_size={filter_size}: use an odd number of boxes >= 1")
    bad = ~xp.isfinite(img)
    if mask is not None:
        bad = bad | xp.asarray(mask)
    use_sep = method == "sep" or (method == "auto" and is_numpy_namespace(xp))
    if use_sep and not is_numpy_namespace(xp):
        raise ValueError("method='sep' needs NumPy arrays; use method='mesh' for other array types")
    clean = xp.where(bad, 0.0, img)
    one_pass = _sep_background if use_sep else _mesh_background
    back, rms = one_pass(xp, clean, bad, box, filter_size, dt)
    src = None
    if mask_sources:
        src = _source_mask(xp, clean - back, rms, bad, source_threshold, use_sep)
        bad = bad | src
        back, rms = one_pass(xp, clean, bad, box, filter_size, dt)
    resid = (clean - back)[~bad]
    if resid.shape[0] < 16:
        raise ValueError("background: fewer than 16 unmasked pixels; pass a smaller mask")
    if resid.shape[0] > 2**18:  # a strided subsample is plenty for a 0.2% sigma
        resid = resid[:: resid.shape[0] // 2**18]
    med = median(xp, resid)
    g_rms = 1.4826 * median(xp, xp.abs(resid - med))
    g_back = median(xp, back[::8, ::8])  # a smooth map: a coarse sample is exact enough
    return Background(back, rms, float(g_back), float(g_rms), "sep" if use_sep else "xp-mesh", src)


def _sep_background(xp, clean, bad, box, filter_size, dt):
    import sep

    data = np.ascontiguousarray(clean, dtype=np.float32)
    bkg = sep.Background(data, mask=np.ascontiguousarray(bad), bw=box, bh=box, fw=filter_size, fh=filter_size)
    return np.asarray(bkg.back(), dtype=dt), np.asarray(bkg.rms(), dtype=dt)


def _source_mask(xp, resid, rms, bad, threshold, use_sep):
    """Pixels of sources above ``threshold`` sigma, dilated by 3 px."""
    if use_sep:
        import sep

        data = np.ascontiguousarray(resid, dtype=np.float32)
        lo, hi = float(np.min(rms)), float(np.max(rms))
        # a scalar error is ~3x faster in sep.extract; use the map only when the noise varies
        err = 0.5 * (lo + hi) if hi < 1.3 * lo else np.ascontiguousarray(rms, dtype=np.float32)
        try:
            _, seg = sep.extract(data, threshold, err=err, mask=np.ascontiguousarray(bad),
                                 minarea=3, segmentation_map=True, deblend_cont=1.0)
            src = seg > 0
        except Exception:  # sep buffer overflow on extreme images: threshold the smoothed image
            src = _smoothed_threshold(xp, resid, rms, max(threshold, 3.5))
    else:
        # no minimum area here: a higher threshold keeps noise peaks (and the 3-px dilation
        # around them) from masking, and so biasing low, a large share of the sky
        src = _smoothed_threshold(xp, resid, rms, max(threshold, 3.5))
    return dilate(xp, src, 3)


def _smoothed_threshold(xp, resid, rms, threshold):
    sm = xp.zeros_like(resid)
    sm[1:-1, 1:-1] = (
        4 * resid[1:-1, 1:-1]
        + 2 * (resid[:-2, 1:-1] + resid[2:, 1:-1] + resid[1:-1, :-2] + resid[1:-1, 2:])
        + (resid[:-2, :-2] + resid[:-2, 2:] + resid[2:, :-2] + resid[2:, 2:])
    ) / 16.0
    return sm > (threshold * 0.375) * rms


def _masked_median(xp: ModuleType, v: Array, valid: Array) -> tuple[Array, Array]:
    """Median along the last axis of ``v`` over ``valid`` entries; returns (median, count)."""
    big = xp.asarray(float("inf"), dtype=v.dtype)
    s = xp.sort(xp.where(valid, v, big), axis=-1)
    n = xp.sum(xp.astype(valid, xp.int64), axis=-1)
    lo = xp.clip((n - 1) // 2, 0, None)
    hi = xp.clip(n // 2, 0, None)
    m_lo = xp.squeeze(xp.take_along_axis(s, lo[..., None], axis=-1), axis=-1)
    m_hi = xp.squeeze(xp.take_along_axis(s, hi[..., None], axis=-1), axis=-1)
    return 0.5 * (m_lo + m_hi), n


def _mesh_background(xp, img, bad, box, filter_size, dt):
    ny, nx = img.shape
    nby, nbx = max(1, ny // box), max(1, nx // box)
    # boxes tile the image; the remainder rows/cols join the last box row/col
    ey = [round(i * ny / nby) for i in range(nby + 1)]
    ex = [round(i * nx / nbx) for i in range(nbx + 1)]
    bh, bw = max(ey[i + 1] - ey[i] for i in range(nby)), max(ex[i + 1] - ex[i] for i in range(nbx))
    vals = xp.full((nby, nbx, bh * bw), float("nan"), dtype=dt)
    ok = xp.zeros((nby, nbx, bh * bw), dtype=xp.bool)
    for i in range(nby):
        for j in range(nbx):
            blk = img[ey[i] : ey[i + 1], ex[j] : ex[j + 1]]
            bb = bad[ey[i] : ey[i + 1], ex[j] : ex[j + 1]]
            k = blk.shape[0] * blk.shape[1]
            vals[i, j, :k] = xp.reshape(blk, (-1,))
            ok[i, j, :k] = ~xp.reshape(bb, (-1,))
    valid = ok
    for _ in range(5):
        med, n = _masked_median(xp, vals, valid)
        dev = xp.abs(vals - med[..., None])
        mad, _ = _masked_median(xp, dev, valid)
        sig = 1.4826 * mad
        valid = ok & (dev <= 3.0 * sig[..., None])
    med, n = _masked_median(xp, vals, valid)
    w = xp.astype(valid, dt)
    cnt = xp.sum(w, axis=-1)
    safe = xp.where(valid, vals, 0.0)
    mean = xp.sum(safe, axis=-1) / xp.clip(cnt, 1.0, None)
    var = xp.sum(w * (safe - mean[..., None]) ** 2, axis=-1) / xp.clip(cnt - 1.0, 1.0, None)
    # a 3-sigma clip of a Gaussian keeps 97.3% of it; its std is 0.9866 sigma
    rms = xp.sqrt(var) / 0.9866
    # SExtractor's mode estimate in crowded boxes, median when the two disagree
    mode = 2.5 * med - 1.5 * mean
    back = xp.where(xp.abs(mean - med) < 0.3 * rms, mode, med)
    good_box = cnt >= 0.3 * (bh * bw)
    if not bool(xp.any(good_box)):
        raise ValueError("background: every mesh box is masked; pass a smaller mask or a larger image")
    gb = float(_median_flat(xp, back[good_box]))
    gr = float(_median_flat(xp, rms[good_box]))
    back = xp.where(good_box, back, gb)
    rms = xp.where(good_box, rms, gr)
    if filter_size > 1 and (nby > 1 or nbx > 1):
        back = _median_filter_mesh(xp, back, filter_size)
        rms = _median_filter_mesh(xp, rms, filter_size)
    cy = xp.asarray([(ey[i] + ey[i + 1] - 1) / 2.0 for i in range(nby)], dtype=dt)
    cx = xp.asarray([(ex[j] + ex[j + 1] - 1) / 2.0 for j in range(nbx)], dtype=dt)
    wy = _interp_matrix(xp, cy, ny, dt)
    wx = _interp_matrix(xp, cx, nx, dt)
    back_map = wy @ back @ xp.permute_dims(wx, (1, 0))
    rms_map = wy @ rms @ xp.permute_dims(wx, (1, 0))
    return back_map, rms_map


def _median_flat(xp: ModuleType, a: Array) -> float:
    s = xp.sort(xp.reshape(a, (-1,)))
    n = s.shape[0]
    return float(s[n // 2]) if n % 2 else 0.5 * (float(s[n // 2 - 1]) + float(s[n // 2]))


def _median_filter_mesh(xp: ModuleType, m: Array, size: int) -> Array:
    """size x size median filter of a small mesh (edge-replicated)."""
    r = size // 2
    nby, nbx = m.shape
    pad = xp.zeros((nby + 2 * r, nbx + 2 * r), dtype=m.dtype)
    pad[r : r + nby, r : r + nbx] = m
    for k in range(r):
        pad[k, r : r + nbx] = m[0, :]
        pad[r + nby + k, r : r + nbx] = m[-1, :]
    for k in range(r):
        pad[:, k] = pad[:, r]
        pad[:, r + nbx + k] = pad[:, r + nbx - 1]
    stack = xp.stack(
        [pad[dy : dy + nby, dx : dx + nbx] for dy in range(size) for dx in range(size)], axis=-1
    )
    s = xp.sort(stack, axis=-1)
    return s[..., (size * size) // 2]


def _interp_matrix(xp: ModuleType, centres: Array, n: int, dt: Any) -> Array:
    """(n, k) linear-interpolation weights from k box centres to n pixels (linear
    extrapolation from the two outer centres beyond the ends)."""
    k = centres.shape[0]
    c = [float(v) for v in centres]
    w = np.zeros((n, k), dtype=np.float64)
    if k == 1:
        w[:, 0] = 1.0
    else:
        pos = np.arange(n, dtype=np.float64)
        j = np.clip(np.searchsorted(c, pos) - 1, 0, k - 2)
        c0, c1 = np.asarray(c)[j], np.asarray(c)[j + 1]
        t = (pos - c0) / (c1 - c0)
        w[np.arange(n), j] = 1.0 - t
        w[np.arange(n), j + 1] += t
    return xp.asarray(w.astype(np.float32 if dt == xp.float32 else np.float64))


def subtract_background(image: Array, **kwargs: Any) -> tuple[Array, Background]:
    """``image - background`` and the :class:`Background` (kwargs go to
    :func:`estimate_background`)."""
    bkg = estimate_background(image, **kwargs)
    xp = get_namespace(image)
    img = as_image(xp, image, bkg.background.dtype, "image")
    return img - bkg.background, bkg


def noise_map(
    *,
    rms: Array | float | None = None,
    variance: Array | None = None,
    ivar: Array | None = None,
    like: Array | None = None,
    dtype: Any = "float32",
) -> Array:
    """Per-pixel noise sigma (ny, nx) from exactly one of ``rms``, ``variance`` or ``ivar``.

    Pixels with no information (variance <= 0 or non-finite, ivar == 0) get ``inf``;
    mask them before differencing. A scalar ``rms`` is broadcast to ``like.shape``.
    """
    given = [v is not None for v in (rms, variance, ivar)]
    if sum(given) != 1:
        raise ValueError("noise_map: pass exactly one of rms=, variance= or ivar=")
    src = rms if rms is not None else variance if variance is not None else ivar
    if isinstance(src, (int, float)):
        if like is None:
            raise ValueError("noise_map: a scalar rms needs like= (an image) for the shape")
        xp = get_namespace(like)
        return xp.full(like.shape, float(src), dtype=float_dtype(xp, dtype))
    xp = get_namespace(src)
    dt = float_dtype(xp, dtype)
    a = as_image(xp, src, dt, "rms" if rms is not None else "variance" if variance is not None else "ivar")
    inf = float("inf")
    if rms is not None:
        return xp.where(xp.isfinite(a) & (a > 0), a, inf)
    if variance is not None:
        return xp.where(xp.isfinite(a) & (a > 0), xp.sqrt(xp.where(a > 0, a, 1.0)), inf)
    return xp.where(xp.isfinite(a) & (a > 0), 1.0 / xp.sqrt(xp.where(a > 0, a, 1.0)), inf)
