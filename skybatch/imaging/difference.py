"""One call from two raw images to a ZOGY difference: the per-pair recipe.

:func:`difference_pair` chains the pure pieces in the order a survey pipeline
uses them: masks (non-finite, saturated) -> reference onto the science grid
(only when WCSs are given and differ) -> background and noise -> PSFs (estimated
from stars unless given) -> ZOGY (flux ratio fitted unless given). The Dask
pipeline calls it once per pair or per sub-tile window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skybatch.imaging.align import align_to_grid
from skybatch.imaging.background import Background, estimate_background
from skybatch.imaging.holes import HOLE_WIDTH, fill_error, fill_holes, split_bad
from skybatch.imaging.margins import fill_residual
from skybatch.imaging.psf import PSFEstimate, estimate_psf
from skybatch.imaging.zogy import ZogyResult, zogy
from skybatch.xp import get_namespace

Array = Any

__all__ = ["DifferenceOutput", "difference_pair"]


@dataclass(frozen=True)
class DifferenceOutput:
    """Output of :func:`difference_pair`.

    Attributes
    ----------
    zogy : the :class:`~skybatch.imaging.zogy.ZogyResult`.
    new, ref : background-subtracted images on the science grid (what ZOGY saw).
    new_background, ref_background : :class:`~skybatch.imaging.background.Background`.
    new_psf, ref_psf : :class:`~skybatch.imaging.psf.PSFEstimate` (method "given" when
        the PSF was passed in).
    saturated : boolean (ny, nx), saturated in either image (for detection masks).
    bad : boolean (ny, nx), non-finite or outside the reference footprint.
    aligned : True when the reference was resampled onto the science grid.
    fill_residual : float (ny, nx), upper bound (sigma) of what the filled holes may leave in
        S_corr (:func:`~skybatch.imaging.margins.fill_residual`; detection keeps out of where it
        exceeds :data:`~skybatch.imaging.margins.FILL_RESIDUAL_MAX`).
    """

    zogy: ZogyResult
    new: Array
    ref: Array
    new_background: Background
    ref_background: Background
    new_psf: PSFEstimate
    ref_psf: PSFEstimate
    saturated: Array
    bad: Array
    aligned: bool
    fill_residual: Array


def difference_pair(
    new: Array,
    ref: Array,
    *,
    new_psf: Array | None = None,
    ref_psf: Array | None = None,
    new_sigma: float | Array | None = None,
    ref_sigma: float | Array | None = None,
    flux_ratio: float | None = None,
    flux_ratio_guess: float | None = None,
    new_gain: float | None = None,
    ref_gain: float | None = None,
    new_saturation: float | None = None,
    ref_saturation: float | None = None,
    new_mask: Array | None = None,
    ref_mask: Array | None = None,
    new_wcs: Any = None,
    ref_wcs: Any = None,
    background_box: int = 64,
    psf_size: int | None = None,
    default_fwhm: float = 3.0,
    astrometric_sigma: tuple[float, float] = (0.0, 0.0),
    psf_accuracy: float = 0.0,
    dtype: Any = "float32",
    fft_workers: int | None = None,
) -> DifferenceOutput:
    """ZOGY difference of a raw science image and a raw reference image.

    Parameters
    ----------
    new, ref : (ny, nx) raw images (background included), ADU.
    new_psf, ref_psf : PSF stamps; ``None`` estimates them from stars
        (:func:`~skybatch.imaging.psf.estimate_psf`, with its Gaussian fallback).
    new_sigma, ref_sigma : background noise (scalar or map); ``None`` uses the robust
        global RMS of the background estimate.
    flux_ratio : new/ref counts of a static source; ``None`` fits it.
    flux_ratio_guess : used instead of the fit's fallbacks when too few stars (e.g. from the
        headers' zero points); the fit from stars wins when it has them.
    new_gain, ref_gain : e-/ADU for the source-noise term (None: background noise only).
    new_saturation, ref_saturation : raw saturation levels (ADU); pixels at or above are
        masked for background, PSF and flux-ratio fitting, and reported in ``saturated``.
    new_mask, ref_mask : boolean (ny, nx) bad-pixel masks, True = bad.
    new_wcs, ref_wcs : astropy WCS; when both are given and differ, the reference (and
        its mask) is resampled onto the science grid first.
    background_box : background mesh size (px).
    psf_size : odd PSF stamp size for estimation (default from the measured FWHM).
    default_fwhm : FWHM (px) of the last-resort Gaussian PSF.
    astrometric_sigma, psf_accuracy, dtype, fft_workers : passed to :func:`~skybatch.imaging.zogy.zogy`.

    Returns
    -------
    DifferenceOutput
    """
    xp = get_namespace(new, ref)
    new = xp.asarray(new)
    ref = xp.asarray(ref)
    aligned = False
    ref_sat_mask = None if ref_saturation is None else (ref >= ref_saturation)
    if new_wcs is not None and ref_wcs is not None:
        al = align_to_grid(ref, ref_wcs, new_wcs, tuple(new.shape))
        if not al.identity:
            aligned = True
            extra = xp.zeros(tuple(ref.shape), dtype=xp.float32)
            if ref_mask is not None:
                extra = xp.where(xp.asarray(ref_mask), 1.0, extra)
            if ref_sat_mask is not None:
                extra = xp.where(ref_sat_mask, 1.0, extra)
            moved = align_to_grid(extra, ref_wcs, new_wcs, tuple(new.shape))
            ref_mask = ~(moved.image < 0.01)  # NaN (outside) and touched pixels are bad
            ref_sat_mask = None
            ref = al.image
    if tuple(ref.shape) != tuple(new.shape):
        raise ValueError(
            f"new {tuple(new.shape)} and ref {tuple(ref.shape)} differ in shape; pass new_wcs= and "
            "ref_wcs= to resample the reference onto the science grid"
        )
    bad = ~xp.isfinite(new) | ~xp.isfinite(ref)
    for m in (new_mask, ref_mask):
        if m is not None:
            bad = bad | xp.asarray(m)
    saturated = xp.zeros(tuple(new.shape), dtype=xp.bool)
    if new_saturation is not None:
        saturated = saturated | (new >= new_saturation)
    if ref_sat_mask is not None:
        saturated = saturated | ref_sat_mask
    masked = bad | saturated

    bn = estimate_background(new, mask=masked, box=background_box, dtype=dtype)
    br = estimate_background(ref, mask=masked, box=background_box, dtype=dtype)
    # isolated bad pixels (holes) take their neighbours' mean, wide bad regions are zeroed
    wide, holes = split_bad(bad, HOLE_WIDTH)
    N = fill_holes(new - bn.background, holes, bad)
    R = fill_holes(ref - br.background, holes, bad)
    sn = bn.global_rms if new_sigma is None else new_sigma
    sr = br.global_rms if ref_sigma is None else ref_sigma

    def psf_for(img, sigma, given):
        if given is not None:
            from skybatch.imaging.psf import psf_fwhm

            return PSFEstimate(given, "given", 0, psf_fwhm(given), "")
        return estimate_psf(img, sigma, size=psf_size, mask=masked, default_fwhm=default_fwhm, dtype=dtype)

    pn = psf_for(N, sn, new_psf)
    pr = psf_for(R, sr, ref_psf)
    res = zogy(
        N, R, pn.psf, pr.psf, sn, sr, flux_ratio, flux_ratio_guess=flux_ratio_guess,
        new_gain=new_gain, ref_gain=ref_gain, astrometric_sigma=astrometric_sigma,
        psf_accuracy=psf_accuracy, mask=masked, dtype=dtype, fft_workers=fft_workers,
    )
    # what a fill from the neighbours misses on a peaked core, bounded in S_corr units
    resid = fill_residual(fill_error(N, holes, wide), fill_error(R, holes, wide), float(res.flux_ratio), sn, sr,
                          res.P_D)
    return DifferenceOutput(res, N, R, bn, br, pn, pr, saturated, bad, aligned, resid)
