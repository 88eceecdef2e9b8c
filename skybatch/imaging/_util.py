"""Small array helpers shared by the imaging modules (private; xp-generic)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from skybatch.xp import get_namespace, is_numpy_namespace

Array = Any


def float_dtype(xp: ModuleType, dtype: Any) -> Any:
    """Resolve ``"float32"`` / ``"float64"`` (or a dtype object) in namespace ``xp``."""
    if isinstance(dtype, str):
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype={dtype!r}: use 'float32' or 'float64'")
        return getattr(xp, dtype)
    name = getattr(dtype, "name", None) or str(dtype)
    for cand in ("float32", "float64"):
        if cand in name:
            return getattr(xp, cand)
    raise ValueError(f"dtype={dtype!r}: use 'float32' or 'float64'")


def as_image(xp: ModuleType, a: Array, dtype: Any, name: str) -> Array:
    """``a`` as a 2-D array of ``dtype`` in ``xp`` (no copy when it already is one)."""
    arr = xp.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D image (ny, nx); got shape {tuple(arr.shape)}")
    if arr.dtype != dtype:
        arr = xp.astype(arr, dtype)
    return arr


def as_images(dtype: Any, **images: Array) -> tuple[ModuleType, Any, list[Array]]:
    """The array namespace of ``images``, ``dtype`` (``"float32"`` / ``"float64"``) resolved in it, and each
    image as a 2-D (ny, nx) array of that dtype, in the order given (the keyword names appear in errors).
    Several images must share one shape; a reference not yet on the science grid is an error that says
    how to put it there."""
    xp = get_namespace(*images.values())
    dt = float_dtype(xp, dtype)
    arrays = [as_image(xp, a, dt, name) for name, a in images.items()]
    shapes = [(int(a.shape[0]), int(a.shape[1])) for a in arrays]
    if len(set(shapes)) > 1:
        named = " and ".join(f"{n} {sh}" for n, sh in zip(images, shapes))
        raise ValueError(f"{named} differ in shape: put the reference on the science grid first "
                         "(skybatch.imaging.align.align_to_grid)")
    return xp, dt, arrays


def normalise_psf(xp: ModuleType, psf: Array, dtype: Any, name: str) -> Array:
    """Check a PSF stamp (2-D, odd sizes, finite, positive sum) and scale it to unit sum."""
    p = xp.asarray(psf)
    if p.ndim != 2:
        raise ValueError(f"{name} must be a 2-D stamp; got shape {tuple(p.shape)}")
    my, mx = p.shape
    if my % 2 == 0 or mx % 2 == 0:
        raise ValueError(
            f"{name} has shape {(my, mx)}: PSF stamps must have odd sizes with the PSF centre "
            "on the middle pixel [m//2, m//2]; crop or pad it by one row/column"
        )
    p = xp.astype(p, dtype) if p.dtype != dtype else p
    if not bool(xp.all(xp.isfinite(p))):
        raise ValueError(f"{name} contains NaN or inf values")
    total = float(xp.sum(p))
    if not total > 0:
        raise ValueError(f"{name} sums to {total}: a PSF stamp must have a positive sum")
    return p / total


def median(xp: ModuleType, a: Array) -> float:
    """Median of all elements of ``a`` (NumPy/CuPy native; sort-based elsewhere)."""
    if is_numpy_namespace(xp) or getattr(xp, "__name__", "") == "cupy":
        return float(xp.median(a))
    flat = xp.sort(xp.reshape(a, (-1,)))
    n = flat.shape[0]
    if n % 2:
        return float(flat[n // 2])
    return 0.5 * (float(flat[n // 2 - 1]) + float(flat[n // 2]))


def scalar_value(xp: ModuleType, v: Any) -> float:
    """A Python number, or the one element of a 0-d / single-element array (see :func:`is_scalar_like`),
    as a float."""
    return float(v if isinstance(v, (int, float)) else xp.reshape(xp.asarray(v), (-1,))[0])


def is_scalar_like(xp: ModuleType, v: Any) -> bool:
    """True for Python numbers and 0-d / single-element arrays."""
    if isinstance(v, (int, float)):
        return True
    shape = getattr(v, "shape", None)
    return shape is not None and (len(shape) == 0 or all(s == 1 for s in shape))


def shift_or(xp: ModuleType, mask: Array, r: int, axis: int) -> Array:
    """Boolean dilation of ``mask`` by ``r`` pixels along one axis (square element)."""
    out = mask
    n = mask.shape[axis]
    for s in range(1, min(r, n - 1) + 1):
        shifted_lo = xp.zeros_like(mask)
        shifted_hi = xp.zeros_like(mask)
        if axis == 0:
            shifted_lo[s:, :] = mask[:-s, :]
            shifted_hi[:-s, :] = mask[s:, :]
        else:
            shifted_lo[:, s:] = mask[:, :-s]
            shifted_hi[:, :-s] = mask[:, s:]
        out = out | shifted_lo | shifted_hi
    return out


def box_sum(xp: ModuleType, a: Array, r: int) -> Array:
    """Sum of ``a`` (2-D) over the (2r+1)x(2r+1) box around each pixel, zero outside the image."""
    ny, nx = a.shape
    p = xp.pad(a, r)
    out = xp.zeros_like(a)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out = out + p[dy : dy + ny, dx : dx + nx]
    return out


def dilate(xp: ModuleType, mask: Array, r: int) -> Array:
    """Dilate a boolean (ny, nx) mask by a (2r+1)^2 square (r <= 0: unchanged)."""
    if r <= 0:
        return mask
    if is_numpy_namespace(xp):
        import scipy.ndimage

        return scipy.ndimage.maximum_filter(mask, size=2 * r + 1, mode="constant", cval=False)
    return shift_or(xp, shift_or(xp, mask, r, 0), r, 1)


def local_maxima(xp: ModuleType, image: Array, threshold: float, valid: Array | None = None) -> Array:
    """Boolean map of pixels >= all 8 neighbours and > ``threshold`` (border pixels excluded)."""
    c = image[1:-1, 1:-1]
    peak = c > threshold
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            nb = image[1 + dy : image.shape[0] - 1 + dy, 1 + dx : image.shape[1] - 1 + dx]
            # strict on one side, non-strict on the other: a flat pair of equal pixels gives one peak
            peak = peak & ((c > nb) if (dy, dx) < (0, 0) else (c >= nb))
    out = xp.zeros(image.shape, dtype=xp.bool)
    out[1:-1, 1:-1] = peak
    if valid is not None:
        out = out & valid
    return out


def gather(xp: ModuleType, image: Array, iy: Any, ix: Any):
    """Values of ``image`` at integer pixel arrays (iy, ix) as a host NumPy array."""
    import numpy as np

    from skybatch.xp import to_numpy

    iy = np.asarray(iy, dtype=np.int64)
    ix = np.asarray(ix, dtype=np.int64)
    if iy.size == 0:
        return np.zeros(0, dtype=np.float64)
    flat_idx = xp.asarray(iy * image.shape[1] + ix)
    return np.asarray(to_numpy(xp.take(xp.reshape(image, (-1,)), flat_idx)), dtype=np.float64)
