"""Fit the flux ratio ``beta = F_n / F_r`` between a new and a reference image.

Method (pure xp, no catalogue matching needed): cross-convolve the images with
each other's PSF, ``A = N (x) P_r`` and ``B = R (x) P_n``. Both then have the same
PSF ``P_n (x) P_r``, so for every static source ``A = beta * B`` at every pixel,
whatever the sub-pixel position of the source. At the peaks of ``B`` that are
bright (peak S/N >= ``snr_min`` in both) and away from masked pixels and the
edges, the ratios of the peak values ``A / B`` (each minus the median of an
annulus at 2-4 FWHM, so residual background errors cancel) are combined with an iteratively 3-sigma-clipped weighted
mean, which rejects variables, transients and blends. This is the ZOGY paper's
condition (a static scene gives ``P_r^ N^ = beta P_n^ R^``, the numerator of
eq. 13 vanishes), measured on stars only so outliers can be clipped.

Fallbacks (with a warning and ``method`` saying so): fewer than ``min_stars``
stars -> least squares ``sum(A B) / sum(B^2)`` over pixels where B > 5 sigma;
nothing above 5 sigma -> 1.0.

With imperfect (estimated) PSFs the peaks weight the PSF cores, so the fitted
ratio is the one that best cancels stars in the ZOGY difference with those PSFs,
which can differ by ~1% from the photometric ratio. ZOGY's point-source fluxes
``F_psf`` do not depend on the flux ratio (it cancels), only the star residuals do.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from skybatch.imaging import _fft
from skybatch.imaging._util import as_images, dilate, gather, local_maxima, normalise_psf
from skybatch.xp import to_numpy

Array = Any

__all__ = ["FluxRatio", "FluxRatioWarning", "fit_flux_ratio", "robust_ratio"]


class FluxRatioWarning(UserWarning):
    """The flux ratio could not be fitted from stars; see ``FluxRatio.method``."""


@dataclass(frozen=True)
class FluxRatio:
    """Fitted ``F_n / F_r``.

    Attributes
    ----------
    value : the ratio (new counts per reference count).
    error : its 1-sigma uncertainty (including the fitted intrinsic scatter of the stars).
    n_stars : stars kept after clipping (0 for the fallbacks).
    n_rejected : stars clipped as outliers.
    method : "stars", "least-squares" or "default".
    """

    value: float
    error: float
    n_stars: int
    n_rejected: int
    method: str


def robust_ratio(
    a: np.ndarray, b: np.ndarray, a_err: np.ndarray, b_err: np.ndarray, *, clip: float = 3.0, max_iter: int = 10
) -> tuple[float, float, np.ndarray]:
    """Outlier-resistant ratio ``a / b`` from matched measurements (host arrays).

    Each ratio's sigma is its propagated error plus, in quadrature, an intrinsic scatter
    fitted so that the reduced chi^2 of the kept ratios is 1 (it absorbs source noise
    and PSF mismatch that the background-only errors miss, so the brightest stars do
    not dominate). Starting from the median, it iterates a weighted mean with
    ``clip``-sigma rejection. Returns (ratio, error, kept mask).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    r = a / b
    r_err = np.abs(r) * np.sqrt((np.asarray(a_err) / a) ** 2 + (np.asarray(b_err) / b) ** 2)
    ok = np.isfinite(r) & np.isfinite(r_err) & (r_err > 0)
    keep = ok.copy()
    if not np.any(keep):
        return float("nan"), float("nan"), keep
    beta = float(np.median(r[keep]))
    s_int = 1.4826 * float(np.median(np.abs(r[keep] - beta))) if keep.sum() > 2 else 0.0
    for _ in range(max_iter):
        sig = np.sqrt(r_err**2 + s_int**2)
        new_keep = ok & (np.abs(r - beta) <= clip * sig)
        if new_keep.sum() == 0:
            break
        s_int = _intrinsic_scatter(r[new_keep], r_err[new_keep], beta)
        w = 1.0 / (r_err[new_keep] ** 2 + s_int**2)
        beta_new = float(np.sum(w * r[new_keep]) / np.sum(w))
        converged = np.array_equal(new_keep, keep) and abs(beta_new - beta) <= 1e-9 * abs(beta)
        keep, beta = new_keep, beta_new
        if converged:
            break
    w = 1.0 / (r_err[keep] ** 2 + s_int**2)
    return beta, 1.0 / math.sqrt(float(np.sum(w))), keep


def _intrinsic_scatter(r: np.ndarray, r_err: np.ndarray, beta: float) -> float:
    """s >= 0 with sum((r - beta)^2 / (r_err^2 + s^2)) = n - 1 (0 if already <= n - 1)."""
    n = r.size
    if n < 3:
        return 0.0
    d2 = (r - beta) ** 2

    def chi2(s: float) -> float:
        return float(np.sum(d2 / (r_err**2 + s * s)))

    if chi2(0.0) <= n - 1:
        return 0.0
    lo, hi = 0.0, float(np.sqrt(d2.max())) + 1e-12
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if chi2(mid) > n - 1:
            lo = mid
        else:
            hi = mid
    return hi


def fit_flux_ratio(
    new: Array,
    ref: Array,
    new_psf: Array,
    ref_psf: Array,
    new_sigma: float,
    ref_sigma: float,
    *,
    mask: Array | None = None,
    snr_min: float = 20.0,
    min_stars: int = 3,
    clip: float = 3.0,
    new_gain: float | None = None,
    ref_gain: float | None = None,
    dtype: Any = "float32",
    fft_workers: int | None = None,
) -> FluxRatio:
    """Fit ``F_n / F_r`` from the static stars of two registered, background-subtracted images.

    Parameters
    ----------
    new, ref : (ny, nx) background-subtracted images on the same grid (ADU).
    new_psf, ref_psf : odd centred PSF stamps (normalised here).
    new_sigma, ref_sigma : scalar background noise (ADU).
    mask : boolean (ny, nx), True = bad (e.g. saturated) in either image; stars within a
        PSF stamp of a masked pixel are not used.
    snr_min : minimum peak S/N of a star in both cross-convolved images.
    min_stars : below this many stars, fall back (see module docstring).
    clip : rejection threshold in sigma.
    new_gain, ref_gain : e-/ADU; when given, the stars' Poisson noise enters their
        weights (recommended: bright stars then count as much as they deserve).

    Returns
    -------
    FluxRatio
    """
    xp, dt, (N, R) = as_images(dtype, new=new, ref=ref)
    shape = (int(N.shape[0]), int(N.shape[1]))
    pn = normalise_psf(xp, new_psf, dt, "new_psf")
    pr = normalise_psf(xp, ref_psf, dt, "ref_psf")
    Pn_hat = _fft.wrapped_rfft2(xp, _fft.stamp_to_wrapped(xp, pn), shape, fft_workers)
    Pr_hat = _fft.wrapped_rfft2(xp, _fft.stamp_to_wrapped(xp, pr), shape, fft_workers)
    bad = ~xp.isfinite(N) | ~xp.isfinite(R)
    N = xp.where(bad, 0.0, N)
    R = xp.where(bad, 0.0, R)
    if mask is not None:
        bad = bad | xp.asarray(mask)
    return _fit_from_spectra(
        xp, _fft.rfft2(xp, N, fft_workers), _fft.rfft2(xp, R, fft_workers), Pn_hat, Pr_hat,
        pn, pr, float(new_sigma), float(ref_sigma), shape, bad,
        snr_min=snr_min, min_stars=min_stars, clip=clip, workers=fft_workers,
        new_gain=new_gain, ref_gain=ref_gain,
    )


def _fit_from_spectra(
    xp: ModuleType,
    N_hat: Array,
    R_hat: Array,
    Pn_hat: Array,
    Pr_hat: Array,
    pn: Array,
    pr: Array,
    sn: float,
    sr: float,
    shape: tuple[int, int],
    bad: Array | None,
    *,
    snr_min: float,
    min_stars: int,
    clip: float,
    workers: int | None,
    new_gain: float | None = None,
    ref_gain: float | None = None,
) -> FluxRatio:
    A = _fft.irfft2(xp, N_hat * Pr_hat, shape, workers, overwrite=True)
    B = _fft.irfft2(xp, R_hat * Pn_hat, shape, workers, overwrite=True)
    sig_a = sn * math.sqrt(float(xp.sum(pr * pr)))
    sig_b = sr * math.sqrt(float(xp.sum(pn * pn)))
    ny, nx = shape
    h = max(pn.shape + pr.shape) // 2 + 1
    valid = xp.zeros(shape, dtype=xp.bool)
    valid[h : ny - h, h : nx - h] = True
    if bad is not None and bool(xp.any(bad)):
        valid = valid & ~dilate(xp, bad, 2 * h)
    peaks = local_maxima(xp, B, snr_min * sig_b, valid)
    idx = np.flatnonzero(np.asarray(to_numpy(xp.reshape(peaks, (-1,)))))
    iy, ix = idx // nx, idx % nx
    sel = gather(xp, A, iy, ix) > snr_min * sig_a
    iy, ix = iy[sel], ix[sel]
    # Peak values minus the local background (median of an annulus at 2-4 FWHM of the
    # common PSF): the matched-filter fluxes that best cancel stars in D for these PSFs,
    # robust to residual background errors.
    from skybatch.imaging.psf import psf_fwhm

    fw = math.hypot(psf_fwhm(pn), psf_fwhm(pr))
    r_in, r_out = 2.0 * fw, 2.0 * fw + 4.0
    ri = int(math.ceil(r_out))
    oy, ox = np.mgrid[-ri : ri + 1, -ri : ri + 1]
    annulus = ((np.hypot(oy, ox) >= r_in) & (np.hypot(oy, ox) <= r_out)).ravel()
    far = (iy >= ri) & (iy < ny - ri) & (ix >= ri) & (ix < nx - ri)
    iy, ix = iy[far], ix[far]
    gy = (iy[:, None] + oy.ravel()[None, :]).ravel()
    gx = (ix[:, None] + ox.ravel()[None, :]).ravel()

    def peak_flux(img: Array) -> np.ndarray:
        if iy.size == 0:
            return np.zeros(0)
        box = gather(xp, img, gy, gx).reshape(iy.size, -1)
        return gather(xp, img, iy, ix) - np.median(box[:, annulus], axis=1)

    a = peak_flux(A)
    b = peak_flux(B)
    if a.size >= min_stars:
        ea2 = np.full(a.size, sig_a * sig_a)
        eb2 = np.full(b.size, sig_b * sig_b)
        # source (Poisson) noise of the filtered peak when the gains are known: for a
        # centred star var(A) = F sum(P_r^2 P_n) / g while A = F sum(P_r P_n)
        if new_gain or ref_gain:
            qn, qr = _common_stamps(pn, pr)
            c_a = float(np.sum(qr * qr * qn) / np.sum(qr * qn))
            c_b = float(np.sum(qn * qn * qr) / np.sum(qr * qn))
            if new_gain:
                ea2 = ea2 + np.clip(a, 0.0, None) * c_a / new_gain
            if ref_gain:
                eb2 = eb2 + np.clip(b, 0.0, None) * c_b / ref_gain
        ea, eb = np.sqrt(ea2), np.sqrt(eb2)
        beta, err, keep = robust_ratio(a, b, ea, eb, clip=clip)
        if np.isfinite(beta) and beta > 0 and keep.sum() >= min_stars:
            return FluxRatio(beta, err, int(keep.sum()), int(keep.size - keep.sum()), "stars")
    # fallback: least squares over bright pixels
    bright = (B > 5.0 * sig_b) & valid
    n_bright = int(xp.sum(xp.astype(bright, xp.int64)))
    if n_bright > 0:
        Bb = xp.where(bright, B, 0.0)
        num = float(xp.sum(A * Bb))
        den = float(xp.sum(Bb * Bb))
        if den > 0 and num > 0:
            beta = num / den
            err = sig_a * math.sqrt(1.0 / den) + beta * sig_b * math.sqrt(1.0 / den)
            warnings.warn(
                f"only {a.size} stars with S/N >= {snr_min} for the flux ratio; used least squares "
                f"over {n_bright} bright pixels: {beta:.4g} (not robust to variables; pass flux_ratio= if known)",
                FluxRatioWarning, stacklevel=3,
            )
            return FluxRatio(beta, err, 0, 0, "least-squares")
    warnings.warn(
        "no source bright enough to fit the flux ratio; using 1.0 (pass flux_ratio= explicitly)",
        FluxRatioWarning, stacklevel=3,
    )
    return FluxRatio(1.0, float("inf"), 0, 0, "default")


def _common_stamps(p1: Array, p2: Array) -> tuple[np.ndarray, np.ndarray]:
    """Two centred odd stamps zero-padded to a common size, as host arrays."""
    a = np.asarray(to_numpy(p1), dtype=np.float64)
    b = np.asarray(to_numpy(p2), dtype=np.float64)
    my, mx = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])

    def pad(q: np.ndarray) -> np.ndarray:
        dy, dx = (my - q.shape[0]) // 2, (mx - q.shape[1]) // 2
        return np.pad(q, ((dy, dy), (dx, dx)))

    return pad(a), pad(b)
