"""Put a reference image onto the science image's pixel grid using their WCS.

When both WCS describe the same grid (checked by mapping test pixels through
both, to ``tolerance`` pixels) the input is returned unchanged. Otherwise:

- ``method="auto"`` (default): ``"area"`` when the source pixels are markedly smaller
  than the target's (pixel-area ratio >= :data:`AREA_RATIO_THRESHOLD`, e.g. a 0.1"/px
  HST/Euclid reference for a 0.25"/px ground image), else ``"interp"``.
- ``method="area"``: flux-conserving area averaging with drizzle-like footprint weights
  (:func:`skybatch.imaging.area_resample.area_average`): every source pixel under a
  target pixel counts by the fraction of its area inside it. Interpolation would sample
  only a few of them (wrong noise, PSF without the target pixel's box). The variance
  is ``sum_i w_i^2 var_i / W^2``, the white one ``sum_i w_i var_i / W^2`` (W = sum_i w_i).
  NumPy on the host for every namespace.
- ``method="interp"``: astropy maps the target pixel grid to source
  pixel coordinates (exactly on a coarse grid every ``step`` pixels, bilinearly
  in between; WCS maps are smooth, so this is accurate to ~1e-4 px) and
  ``scipy.ndimage.map_coordinates`` resamples (NumPy, or ``cupyx.scipy.ndimage``
  for CuPy; other namespaces go through host memory).
- ``method="reproject"``: ``reproject.reproject_interp`` (exact per-pixel WCS
  evaluation; note that importing reproject imports dask.array, ~2-10 s here).

Variance: an interpolated pixel is ``sum_i w_i v_i`` of source pixels with weights
``w_i``, so its variance is ``sum_i w_i^2 var_i`` (not ``sum_i w_i var_i``): bilinear
interpolation at half-pixel offsets lowers the per-pixel variance by up to 4x.
:attr:`Aligned.variance` is that per-pixel variance (what one measures on the
resampled pixels; exact for nearest-neighbour and bilinear, the bilinear weights
are used for the spline orders). The noise is then correlated between neighbours:
:attr:`Aligned.variance_white` is the variance of white noise with the same power
at low spatial frequencies (the ones a PSF-matched filter uses), ``sum_i w_i var_i``
divided by the pixel-area ratio (target over source pixel area: a target pixel
twice as large averages twice as many independent source pixels); that is the one
to give ZOGY, whose noise model is white. ``flux_conserving=True`` multiplies the
image by the area ratio (counts per target pixel, so a star keeps its total counts)
and both variances by its square.
Prefer differencing on the reference's native grid when possible, and give ZOGY
an ``astrometric_sigma`` to cover residual registration error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from skybatch.imaging.area_resample import area_average
from skybatch.xp import get_namespace, is_numpy_namespace, to_numpy

Array = Any

__all__ = ["Aligned", "same_grid", "align_to_grid", "pixel_map", "pixel_area_ratio", "AREA_RATIO_THRESHOLD"]

#: ``method="auto"`` area-averages when a target pixel covers at least this many source pixels
#: (below it the bilinear kernel, two source pixels wide, still spans a target pixel).
AREA_RATIO_THRESHOLD = 2.5

_ORDERS = {"nearest-neighbor": 0, "bilinear": 1, "biquadratic": 2, "bicubic": 3}


@dataclass(frozen=True)
class Aligned:
    """Output of :func:`align_to_grid`.

    Attributes
    ----------
    image : (ny, nx) image on the target grid (NaN where the source has no data).
    variance : per-pixel variance of ``image``, ``sum w_i^2 var_i`` (see the module
        docstring), or None when no variance was given.
    footprint : (ny, nx) boolean, True where the source covers the target pixel.
    identity : True when the grids matched and the input was returned as is.
    variance_white : ``sum w_i var_i / pixel_area_ratio``: the white-noise variance with
        the same low-frequency power (what a matched filter such as ZOGY should be given), or None.
    pixel_area_ratio : target pixel area / source pixel area at the target centre
        (already applied when ``flux_conserving=True``).
    """

    image: Array
    variance: Array | None
    footprint: Array
    identity: bool
    variance_white: Array | None = None
    pixel_area_ratio: float = 1.0


def same_grid(wcs_a: Any, shape_a: tuple[int, ...], wcs_b: Any, shape_b: tuple[int, ...],
              tolerance: float = 1e-3) -> bool:
    """True when two (WCS, shape) pairs describe the same pixel grid to ``tolerance`` px."""
    if tuple(shape_a) != tuple(shape_b):
        return False
    ny, nx = shape_a
    xs = np.array([0, nx - 1, 0, nx - 1, (nx - 1) / 2, nx / 3])
    ys = np.array([0, 0, ny - 1, ny - 1, (ny - 1) / 2, 2 * ny / 3])
    world = wcs_a.pixel_to_world_values(xs, ys)
    xb, yb = wcs_b.world_to_pixel_values(*world)
    return bool(np.all(np.abs(np.asarray(xb) - xs) < tolerance) and np.all(np.abs(np.asarray(yb) - ys) < tolerance))


def pixel_map(wcs: Any, target_wcs: Any, target_shape: tuple[int, int], step: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Source-image pixel coordinates (x, y), each (ny, nx) float64, of every target pixel.

    Exact WCS evaluation on a grid every ``step`` pixels (plus the last row/column),
    bilinear interpolation in between (``step=1``: exact everywhere).
    """
    ny, nx = target_shape
    gy = np.unique(np.r_[np.arange(0, ny, step), ny - 1]).astype(np.float64)
    gx = np.unique(np.r_[np.arange(0, nx, step), nx - 1]).astype(np.float64)
    X, Y = np.meshgrid(gx, gy)
    world = target_wcs.pixel_to_world_values(X.ravel(), Y.ravel())
    sx, sy = wcs.world_to_pixel_values(*world)
    sx = np.asarray(sx, dtype=np.float64).reshape(X.shape)
    sy = np.asarray(sy, dtype=np.float64).reshape(X.shape)
    if step == 1:
        return sx, sy

    def interp(grid: np.ndarray) -> np.ndarray:
        rows = np.empty((ny, gx.size))
        for j in range(gx.size):
            rows[:, j] = np.interp(np.arange(ny), gy, grid[:, j])
        out = np.empty((ny, nx))
        xs = np.arange(nx)
        for i in range(ny):
            out[i] = np.interp(xs, gx, rows[i])
        return out

    return interp(sx), interp(sy)


def align_to_grid(
    image: Array,
    wcs: Any,
    target_wcs: Any,
    target_shape: tuple[int, int],
    *,
    variance: Array | None = None,
    order: str = "bilinear",
    method: str = "auto",
    tolerance: float = 1e-3,
    flux_conserving: bool = False,
) -> Aligned:
    """Resample ``image`` (with ``wcs``) onto the grid of ``target_wcs`` / ``target_shape``.

    Parameters
    ----------
    image : (ny', nx') image to move (e.g. the reference).
    wcs : its astropy WCS.
    target_wcs, target_shape : the science image's WCS and (ny, nx).
    variance : optional variance map of ``image``, resampled the same way.
    order : "nearest-neighbor", "bilinear" (default), "biquadratic" or "bicubic" (interpolation only).
    method : "auto" (default), "area", "interp" or "reproject" (see the module docstring).
    tolerance : grids closer than this (px) count as identical.
    flux_conserving : multiply the image by the pixel-area ratio (counts per target
        pixel: a star keeps its total counts when the pixel scales differ) and both
        variances by its square.

    Returns
    -------
    Aligned (arrays in the namespace of ``image``; float32 for float32 input).
    """
    if order not in _ORDERS:
        raise ValueError(f"order={order!r}: use one of {sorted(_ORDERS)}")
    if method not in ("auto", "area", "interp", "reproject"):
        raise ValueError(f"method={method!r}: use 'auto', 'area', 'interp' or 'reproject'")
    xp = get_namespace(image)
    shape_in = tuple(int(s) for s in image.shape)
    if same_grid(wcs, shape_in, target_wcs, tuple(target_shape), tolerance):
        return Aligned(image, variance, xp.ones(shape_in, dtype=xp.bool), True, variance, 1.0)
    dt = np.float32 if "float32" in str(getattr(image, "dtype", "")) else np.float64
    target_shape = (int(target_shape[0]), int(target_shape[1]))
    area = pixel_area_ratio(wcs, target_wcs, target_shape)
    if method == "auto":
        method = "area" if area >= AREA_RATIO_THRESHOLD else "interp"
    if method == "area":
        img, var, white, foot = (_area(xp, a, dt) for a in area_average(
            to_numpy(image), wcs, target_wcs, target_shape,
            variance=None if variance is None else to_numpy(variance)))
        ident = False
    else:
        img, var, foot, ident, white = _align(xp, image, wcs, target_wcs, target_shape, variance, order, method, dt)
        if white is not None:
            white = white / dt(area)
    if not flux_conserving or area == 1.0:
        return Aligned(img, var, foot, ident, white, area)
    a2 = dt(area * area)
    return Aligned(img * dt(area), None if var is None else var * a2, foot, False,
                   None if white is None else white * a2, area)


def pixel_area_ratio(wcs: Any, target_wcs: Any, target_shape: tuple[int, int]) -> float:
    """Area of a target pixel over that of a source pixel, at the target grid's centre (from the WCSs)."""
    ny, nx = target_shape
    cx, cy = (nx - 1) / 2.0, (ny - 1) / 2.0
    xs = np.array([cx, cx + 1.0, cx])
    ys = np.array([cy, cy, cy + 1.0])
    sx, sy = wcs.world_to_pixel_values(*target_wcs.pixel_to_world_values(xs, ys))
    sx, sy = np.asarray(sx, np.float64), np.asarray(sy, np.float64)
    # the target pixel's edge vectors in source pixels: their cross product is its area in source pixels
    ax, ay = sx[1] - sx[0], sy[1] - sy[0]
    bx, by = sx[2] - sx[0], sy[2] - sy[0]
    a = abs(ax * by - ay * bx)
    return float(a) if np.isfinite(a) and a > 0 else 1.0


def _area(xp: Any, a: np.ndarray | None, dt: Any) -> Array:
    """An area-average output in the input's namespace (float ``dt``; boolean footprints as they are)."""
    if a is None:
        return None
    a = a if a.dtype == bool else a.astype(dt)
    return a if is_numpy_namespace(xp) else xp.asarray(a)


def _bilinear_sq(xp: Any, var: Array, sx: Array, sy: Array, covered: Array, dt: Any) -> Array:
    """``sum w^2 var`` with bilinear weights at source coordinates (sx, sy) (edges clamped, like mode='nearest')."""
    v = xp.asarray(var, dtype=dt)
    ny, nx = int(v.shape[0]), int(v.shape[1])
    x0 = xp.floor(sx)
    y0 = xp.floor(sy)
    fx = sx - x0
    fy = sy - y0
    x0 = x0.astype(xp.int64)
    y0 = y0.astype(xp.int64)
    out = xp.zeros(sx.shape, dtype=xp.float64)
    for oy, wy in ((0, 1.0 - fy), (1, fy)):
        iy = xp.clip(y0 + oy, 0, ny - 1)
        for ox, wx in ((0, 1.0 - fx), (1, fx)):
            ix = xp.clip(x0 + ox, 0, nx - 1)
            w = wx * wy
            out += (w * w) * v[iy, ix]
    return xp.where(covered, out, xp.nan).astype(dt)


def _align(xp, image, wcs, target_wcs, target_shape, variance, order, method, dt):
    """(image, variance, footprint, identity, variance_white) resampled onto the target grid."""

    if method == "reproject":
        from reproject import reproject_interp

        def resample(a: Array) -> tuple[np.ndarray, np.ndarray]:
            out, foot = reproject_interp((np.asarray(to_numpy(a), dtype=np.float64), wcs), target_wcs,
                                         shape_out=target_shape, order=order)
            return out, foot > 0

        out, covered = resample(image)
        white = None if variance is None else resample(variance)[0]
        out = np.where(covered, out, np.nan).astype(dt)
        white = None if white is None else np.where(covered, white, np.nan).astype(dt)
        var_out = None
        if variance is not None:  # reproject does not expose its weights: take them from the pixel map
            sx, sy = pixel_map(wcs, target_wcs, target_shape)
            var_out = _bilinear_sq(np, np.asarray(to_numpy(variance)), sx, sy, covered, dt)
        if is_numpy_namespace(xp):
            return out, var_out, covered, False, white
        return (xp.asarray(out), None if var_out is None else xp.asarray(var_out), xp.asarray(covered), False,
                None if white is None else xp.asarray(white))

    sx, sy = pixel_map(wcs, target_wcs, target_shape)
    ny_in, nx_in = (int(s) for s in image.shape)
    covered = (sx >= -0.5) & (sx <= nx_in - 0.5) & (sy >= -0.5) & (sy <= ny_in - 0.5)
    k = _ORDERS[order]
    use_cupy = getattr(xp, "__name__", "") == "cupy"
    if use_cupy:  # pragma: no cover - GPU only
        import cupyx.scipy.ndimage as ndi

        coords = xp.asarray(np.stack([sy, sx]))
        cov = xp.asarray(covered)

        def resample_xp(a: Array) -> Array:
            r = ndi.map_coordinates(xp.asarray(a, dtype=dt), coords, order=k, mode="nearest")
            return xp.where(cov, r, xp.nan)

        if variance is None:
            return resample_xp(image), None, cov, False, None
        var_sq = _bilinear_sq(xp, variance, xp.asarray(sx), xp.asarray(sy), cov, dt)
        return resample_xp(image), var_sq, cov, False, resample_xp(variance)
    import scipy.ndimage as ndi

    coords = np.stack([sy, sx])

    def resample_np(a: Array) -> np.ndarray:
        src = np.asarray(to_numpy(a), dtype=np.float64)
        r = ndi.map_coordinates(src, coords, order=k, mode="nearest", prefilter=k > 1)
        return np.where(covered, r, np.nan).astype(dt)

    out = resample_np(image)
    white = var_out = None
    if variance is not None:
        white = resample_np(variance)
        var_out = _bilinear_sq(np, np.asarray(to_numpy(variance)), sx, sy, covered, dt)
    if is_numpy_namespace(xp):
        return out, var_out, covered, False, white
    return (xp.asarray(out), None if var_out is None else xp.asarray(var_out), xp.asarray(covered), False,
            None if white is None else xp.asarray(white))
