"""PSF models sampled on pixel grids (Gaussian, Moffat), FWHM measurement and sub-pixel stamp shifts."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from skybatch.imaging._util import float_dtype
from skybatch.xp import is_numpy_namespace, to_numpy

Array = Any

__all__ = ["FWHM_PER_SIGMA", "default_psf_size", "gaussian_psf", "moffat_psf", "psf_fwhm", "shift_stamps"]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def default_psf_size(fwhm: float) -> int:
    """Odd stamp size that holds a PSF of this FWHM out to ~3 FWHM (min 11 px)."""
    m = int(math.ceil(6.0 * fwhm)) | 1
    return max(m, 11)


def _grid(xp: ModuleType, size: int, dx: float, dy: float, dtype: Any):
    h = size // 2
    ax = xp.arange(-h, h + 1, dtype=dtype)
    yy = xp.reshape(ax, (-1, 1)) - dy
    xx = xp.reshape(ax, (1, -1)) - dx
    return yy, xx


def gaussian_psf(
    fwhm: float,
    size: int | None = None,
    *,
    xp: ModuleType = np,
    dtype: Any = "float32",
    dx: float = 0.0,
    dy: float = 0.0,
    ellipticity: float = 0.0,
    angle: float = 0.0,
) -> Array:
    """Gaussian PSF stamp sampled at pixel centres, unit sum.

    Parameters
    ----------
    fwhm : full width at half maximum, pixels (geometric mean of the axes).
    size : odd stamp size (default :func:`default_psf_size`).
    dx, dy : sub-pixel offset of the centre from the middle pixel (x = columns).
    ellipticity : 1 - b/a; ``angle`` of the major axis in radians from +x.
    """
    dt = float_dtype(xp, dtype)
    size = default_psf_size(fwhm) if size is None else int(size)
    if size % 2 == 0:
        raise ValueError(f"size={size}: PSF stamps must have an odd size")
    yy, xx = _grid(xp, size, dx, dy, dt)
    q = 1.0 - ellipticity
    s = fwhm / FWHM_PER_SIGMA
    sa, sb = s / math.sqrt(q), s * math.sqrt(q)
    c, sn = math.cos(angle), math.sin(angle)
    u = xx * c + yy * sn
    v = -xx * sn + yy * c
    p = xp.exp(-0.5 * ((u / sa) ** 2 + (v / sb) ** 2))
    return p / xp.sum(p)


def moffat_psf(
    fwhm: float,
    beta: float = 3.0,
    size: int | None = None,
    *,
    xp: ModuleType = np,
    dtype: Any = "float32",
    dx: float = 0.0,
    dy: float = 0.0,
) -> Array:
    """Circular Moffat PSF ``(1 + r^2/alpha^2)^-beta`` sampled at pixel centres, unit sum
    over the stamp; ``alpha = fwhm / (2 sqrt(2^(1/beta) - 1))``."""
    dt = float_dtype(xp, dtype)
    size = default_psf_size(1.5 * fwhm) if size is None else int(size)
    if size % 2 == 0:
        raise ValueError(f"size={size}: PSF stamps must have an odd size")
    yy, xx = _grid(xp, size, dx, dy, dt)
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    p = (1.0 + (xx * xx + yy * yy) / (alpha * alpha)) ** (-beta)
    return p / xp.sum(p)


def psf_fwhm(psf: Array) -> float:
    """FWHM in pixels of a centred stamp: least-squares fit of a pixel-sampled circular
    Gaussian (free amplitude) to the stamp inside 70% of its half-width.

    Exact for a Gaussian, valid when undersampled, and insensitive to noise in the
    wings of an estimated PSF; for other profiles it is the core's Gaussian-equivalent.
    """
    p = np.asarray(to_numpy(psf), dtype=np.float64)
    h_y, h_x = p.shape[0] // 2, p.shape[1] // 2
    yy, xx = np.mgrid[-h_y : h_y + 1, -h_x : h_x + 1]
    r2 = (yy * yy + xx * xx).astype(np.float64)
    core = r2 <= (0.7 * (min(h_y, h_x) + 0.5)) ** 2
    d, r2c = p[core], r2[core]

    def cost(sig: float) -> float:
        g = np.exp(-0.5 * r2c / (sig * sig))
        a = float(d @ g) / float(g @ g)
        return float(np.sum((d - a * g) ** 2))

    grid = np.exp(np.linspace(math.log(0.2), math.log(max(min(h_y, h_x), 1.0)), 120))
    costs = np.array([cost(s) for s in grid])
    k = int(np.argmin(costs))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    for _ in range(40):  # golden-section refinement
        a = hi - (hi - lo) / 1.618033988749895
        b = lo + (hi - lo) / 1.618033988749895
        if cost(a) < cost(b):
            hi = b
        else:
            lo = a
    return float(FWHM_PER_SIGMA * 0.5 * (lo + hi))


def shift_stamps(xp: ModuleType, stamps: Array, dx: Array, dy: Array) -> Array:
    """Shift (n, m, m) stamps by sub-pixel (dx, dy) (n,) each with the Fourier shift theorem.

    Positive ``dx`` moves the content towards larger x. Stamps are treated as periodic,
    so their edges should be near zero (background-subtracted cut-outs are).
    """
    n, my, mx = stamps.shape
    st_hat = xp.fft.rfftn(stamps, axes=(-2, -1)) if not is_numpy_namespace(xp) else np.fft.rfft2(stamps)
    dt = stamps.dtype
    ky = xp.reshape(xp.asarray(_fftfreq(my), dtype=dt), (1, -1, 1))
    kx = xp.reshape(xp.asarray(np.arange(mx // 2 + 1) / mx, dtype=dt), (1, 1, -1))
    dx = xp.reshape(xp.asarray(dx, dtype=dt), (-1, 1, 1))
    dy = xp.reshape(xp.asarray(dy, dtype=dt), (-1, 1, 1))
    phase = (kx * dx + ky * dy) * (-2.0 * math.pi)
    ramp = xp.cos(phase) + xp.sin(phase) * 1j
    st_hat = st_hat * ramp
    if is_numpy_namespace(xp):
        return np.fft.irfft2(st_hat, s=(my, mx)).astype(dt, copy=False)
    return xp.fft.irfftn(st_hat, s=(my, mx), axes=(-2, -1))


def _fftfreq(n: int) -> np.ndarray:
    return np.fft.fftfreq(n)
