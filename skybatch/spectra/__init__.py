"""Pure array functions on spectra: mask, resample, rest frame, normalise.

Everything here takes arrays and returns arrays, written once against the
array namespace of its inputs (NumPy on CPU, CuPy on GPU; see
:mod:`skybatch.xp`), vectorised over a whole chunk (n_spectrum × n_wave).
The pipeline maps :func:`preprocess_block` with a :class:`PreprocessRecipe`
over store chunks.

Conventions: wavelengths in Å (vacuum), flux density per Å, ``ivar = 0``
means no information and always comes with ``flux = 0`` in outputs; masks
are uint32 bit fields (survey bits plus skybatch bits 29-31).
"""

from __future__ import annotations

from skybatch.spectra.camera_coadd import arm_offsets, coadd_cameras
from skybatch.spectra.continuum import ContinuumDivided, divide_continuum, fit_continuum
from skybatch.spectra.flags import (
    BAD_REDSHIFT,
    CONTINUUM_FAILED,
    DROPPED,
    NO_GOOD_PIXELS,
    NORM_FAILED,
    OBSERVED_FRAME,
    SPECTRUM_FLAGS,
    describe_flags,
)
from skybatch.spectra.grids import GRID_PRESETS, GridSpec, explicit_grid, linear_grid, loglam_grid
from skybatch.spectra.mask import (
    BADPIX,
    DESI_BAD_BITS,
    DESI_SPECMASK,
    MASK_PRESETS,
    NOCOVERAGE,
    SDSS_BAD_BITS,
    SDSS_SPPIXMASK,
    SKYBATCH_PIXMASK,
    SKYLINE,
    describe_mask,
    mask_bad_pixels,
    mask_bits_from_names,
    parse_mask_bits,
)
from skybatch.spectra.normalize import NORMALIZE_METHODS, Normalized, normalization_scale, normalize, undo_normalize
from skybatch.spectra.recipe import (
    RECIPE_VERSION,
    PreprocessedBlock,
    PreprocessRecipe,
    preprocess_block,
    target_wavelength,
)
from skybatch.spectra.redshift import RestFrame, rest_wavelength, to_rest_frame, usable_redshift
from skybatch.spectra.resample import Resampled, ResamplePlan, pixel_edges, resample, resample_plan
from skybatch.spectra.skylines import SKY_LINES_AIR, SKY_LINES_VACUUM, air_to_vacuum, mask_sky_lines, sky_line_mask

__all__ = [
    # mask
    "mask_bad_pixels",
    "parse_mask_bits",
    "mask_bits_from_names",
    "describe_mask",
    "BADPIX",
    "NOCOVERAGE",
    "SKYLINE",
    "SKYBATCH_PIXMASK",
    "DESI_SPECMASK",
    "DESI_BAD_BITS",
    "SDSS_SPPIXMASK",
    "SDSS_BAD_BITS",
    "MASK_PRESETS",
    # grids
    "GridSpec",
    "GRID_PRESETS",
    "linear_grid",
    "loglam_grid",
    "explicit_grid",
    # resample
    "resample",
    "resample_plan",
    "ResamplePlan",
    "Resampled",
    "pixel_edges",
    # rest frame
    "to_rest_frame",
    "rest_wavelength",
    "usable_redshift",
    "RestFrame",
    # normalise
    "normalize",
    "undo_normalize",
    "normalization_scale",
    "Normalized",
    "NORMALIZE_METHODS",
    # sky lines and continuum
    "mask_sky_lines",
    "sky_line_mask",
    "air_to_vacuum",
    "SKY_LINES_AIR",
    "SKY_LINES_VACUUM",
    "divide_continuum",
    "fit_continuum",
    "ContinuumDivided",
    # b/r/z camera coadd (skybatch.spectra.camera_coadd)
    "coadd_cameras",
    "arm_offsets",
    # flags
    "SPECTRUM_FLAGS",
    "BAD_REDSHIFT",
    "OBSERVED_FRAME",
    "DROPPED",
    "NO_GOOD_PIXELS",
    "NORM_FAILED",
    "CONTINUUM_FAILED",
    "describe_flags",
    # recipe
    "PreprocessRecipe",
    "PreprocessedBlock",
    "preprocess_block",
    "target_wavelength",
    "RECIPE_VERSION",
]
