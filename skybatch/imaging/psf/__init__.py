"""PSF models and PSF estimation from isolated, unsaturated stars.

:func:`estimate_psf` finds stars (``sep.extract`` on NumPy, a local-maximum
finder on any other namespace), keeps the isolated, unsaturated, point-like ones
away from the edges, shifts each stamp so the star is centred on the middle
pixel (Fourier shift), normalises it to unit flux and stacks them (a clipped
inverse-variance mean around the per-pixel median). With
fewer than ``min_stars`` usable stars it falls back, with a
:class:`PSFFallbackWarning` and the ``method`` field saying which, to

1. ``"gaussian-measured"``: a Gaussian whose FWHM is measured from whatever
   sources were detected (twice their median half-light radius), or
2. ``"gaussian-default"``: a Gaussian of ``default_fwhm`` when nothing usable
   was detected.

It never raises for lack of stars.
"""

from __future__ import annotations

from skybatch.imaging.psf.estimate import PSFEstimate, PSFFallbackWarning, estimate_psf
from skybatch.imaging.psf.models import (
    FWHM_PER_SIGMA,
    default_psf_size,
    gaussian_psf,
    moffat_psf,
    psf_fwhm,
    shift_stamps,
)
from skybatch.imaging.psf.stars import find_stars

__all__ = [
    "FWHM_PER_SIGMA",
    "PSFEstimate",
    "PSFFallbackWarning",
    "estimate_psf",
    "find_stars",
    "gaussian_psf",
    "moffat_psf",
    "psf_fwhm",
    "shift_stamps",
    "default_psf_size",
]
