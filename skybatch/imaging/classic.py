"""Classic PSF-matched image subtraction (a baseline to compare ZOGY against).

The sharper image is convolved with a matching kernel ``K`` so that its PSF
becomes the broader one (``P_sharp (x) K = P_broad``), the reference is scaled by
the flux ratio, and the two are subtracted (in new-image counts)::

    new sharper:  diff = N (x) K - beta R
    ref sharper:  diff = N - beta R (x) K

Kernels: ``"fourier"`` divides the PSF spectra with Tikhonov regularisation,
``K^ = P_broad^ conj(P_sharp^) / (|P_sharp^|^2 + eps max|P_sharp^|^2)``; ``"gaussian"``
is a Gaussian of width ``sqrt(s_broad^2 - s_sharp^2)`` from the PSFs' second moments
(exact for Gaussian PSFs). The per-pixel noise of ``diff`` is
``sqrt(sigma_sharp^2 sum K^2 + sigma_broad^2)`` with the matching scale factors
(sigma maps are applied pixel by pixel, approximate where sigma varies on the kernel
scale); note that, unlike ZOGY's D, this noise is spatially correlated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from skybatch.imaging import _fft
from skybatch.imaging._util import as_image, as_images, is_scalar_like, normalise_psf, scalar_value
from skybatch.imaging.psf import FWHM_PER_SIGMA, gaussian_psf, psf_fwhm

Array = Any

__all__ = ["ClassicResult", "classic_subtract"]


@dataclass(frozen=True)
class ClassicResult:
    """Output of :func:`classic_subtract`.

    Attributes
    ----------
    difference : (ny, nx) PSF-matched difference, new-image counts.
    noise : (ny, nx) per-pixel 1-sigma noise of ``difference`` (new-image counts).
    kernel : the real-space matching kernel stamp (unit sum, centred).
    convolved : "new" or "ref": which image was convolved.
    flux_ratio : beta used to scale the reference.
    psf : the PSF of ``difference`` (the broader input PSF), unit sum.
    """

    difference: Array
    noise: Array
    kernel: Array
    convolved: str
    flux_ratio: float
    psf: Array


def classic_subtract(
    new: Array,
    ref: Array,
    new_psf: Array,
    ref_psf: Array,
    new_sigma: float | Array,
    ref_sigma: float | Array,
    flux_ratio: float = 1.0,
    *,
    method: str = "fourier",
    regularization: float = 1e-4,
    dtype: Any = "float32",
    fft_workers: int | None = None,
) -> ClassicResult:
    """PSF-matched difference ``new - flux_ratio * ref`` after matching the sharper PSF.

    Parameters
    ----------
    new, ref : (ny, nx) registered, background-subtracted images (ADU).
    new_psf, ref_psf : odd centred PSF stamps (normalised here).
    new_sigma, ref_sigma : background noise (scalar or (ny, nx) map), ADU.
    flux_ratio : new counts per reference count.
    method : "fourier" (regularised spectral division) or "gaussian" (Gaussian kernel
        from the PSF widths).
    regularization : eps of the Fourier division, relative to max |P_sharp^|^2.

    Returns
    -------
    ClassicResult
    """
    if method not in ("fourier", "gaussian"):
        raise ValueError(f"method={method!r}: use 'fourier' or 'gaussian'")
    xp, dt, (N, R) = as_images(dtype, new=new, ref=ref)
    shape = (int(N.shape[0]), int(N.shape[1]))
    pn = normalise_psf(xp, new_psf, dt, "new_psf")
    pr = normalise_psf(xp, ref_psf, dt, "ref_psf")
    beta = float(flux_ratio)
    fw_n, fw_r = psf_fwhm(pn), psf_fwhm(pr)
    new_sharper = fw_n <= fw_r
    p_sharp, p_broad = (pn, pr) if new_sharper else (pr, pn)
    m = max(p_sharp.shape + p_broad.shape)
    small = (_fft.next_fast_len(2 * m + 1), _fft.next_fast_len(2 * m + 1))
    small = (min(small[0], shape[0]), min(small[1], shape[1]))

    if method == "fourier":
        Ps = _fft.rfft2(xp, _fft.embed_wrapped(xp, _fft.stamp_to_wrapped(xp, p_sharp), small))
        Pb = _fft.rfft2(xp, _fft.embed_wrapped(xp, _fft.stamp_to_wrapped(xp, p_broad), small))
        ps2 = _fft.abs2(xp, Ps)
        eps = regularization * float(xp.max(ps2))
        K_hat = Pb * xp.conj(Ps) / (ps2 + eps)
        k_wrapped = _fft.irfft2(xp, K_hat, small)
        ksize = m if m % 2 else m + 1
        kernel = _fft.wrapped_to_stamp(xp, k_wrapped, (ksize, ksize))
    else:
        s_b = max(fw_n, fw_r) / FWHM_PER_SIGMA
        s_s = min(fw_n, fw_r) / FWHM_PER_SIGMA
        s_k = math.sqrt(max(s_b * s_b - s_s * s_s, 1e-4))
        ksize = max(int(math.ceil(8 * s_k)) | 1, 3)
        kernel = gaussian_psf(s_k * FWHM_PER_SIGMA, ksize, xp=xp, dtype=dtype)
    kernel = kernel / xp.sum(kernel)
    if kernel.shape[0] > shape[0] or kernel.shape[1] > shape[1]:
        raise ValueError(f"matching kernel {tuple(kernel.shape)} does not fit the image {shape}")
    K_full = _fft.wrapped_rfft2(xp, _fft.stamp_to_wrapped(xp, kernel), shape, fft_workers)
    sum_k2 = float(xp.sum(kernel * kernel))

    def sig2(s: Any, name: str):
        if is_scalar_like(xp, s):
            return scalar_value(xp, s) ** 2
        a = as_image(xp, s, dt, name)
        return a * a

    vn, vr = sig2(new_sigma, "new_sigma"), sig2(ref_sigma, "ref_sigma")
    if new_sharper:
        matched = _fft.irfft2(xp, _fft.rfft2(xp, N, fft_workers) * K_full, shape, fft_workers, overwrite=True)
        diff = matched - R * beta
        var = vn * sum_k2 + vr * (beta * beta)
    else:
        matched = _fft.irfft2(xp, _fft.rfft2(xp, R, fft_workers) * K_full, shape, fft_workers, overwrite=True)
        diff = N - matched * beta
        var = vn + vr * (sum_k2 * beta * beta)
    if isinstance(var, float):
        noise = xp.full(shape, math.sqrt(var), dtype=dt)
    else:
        noise = xp.sqrt(var)
    return ClassicResult(diff, noise, kernel, "new" if new_sharper else "ref", beta, p_broad)
