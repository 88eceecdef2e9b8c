"""Pure array functions on images: background, alignment, PSFs, ZOGY, detection, injection.

Everything here takes arrays and returns arrays (NumPy, CuPy or any array-API
namespace, chosen from the inputs with :func:`skybatch.xp.get_namespace`); nothing
imports Dask, Prefect or fsspec. Star catalogues and candidate tables are small
host-side NumPy / pandas objects.

Main entry points:

- :func:`zogy` / :class:`ZogyPlan` / :class:`ZogyResult`: the ZOGY difference
  (D, S, S_corr, F_psf) of two registered, background-subtracted images.
- :func:`difference_pair`: raw pair -> masks, alignment, background, PSFs, ZOGY.
- :func:`detect_candidates`, :func:`cutout_triplets`: candidates and their stamps.
- :func:`plan_subtiles`, :func:`zogy_subtiles`: spatially varying PSFs.
- :func:`inject_point_sources`, :func:`recovery`: completeness and false positives.
- :func:`bright_star_veto`: flux-based veto discs around bright and saturated stars.
"""

from __future__ import annotations

from skybatch.imaging.align import Aligned, align_to_grid, pixel_map, same_grid
from skybatch.imaging.background import (
    Background,
    estimate_background,
    noise_map,
    subtract_background,
)
from skybatch.imaging.classic import ClassicResult, classic_subtract
from skybatch.imaging.cutouts import cutout_triplets, cutouts
from skybatch.imaging.detect import (
    CANDIDATE_COLUMNS,
    detect_candidates,
    expected_false_positives,
)
from skybatch.imaging.difference import DifferenceOutput, difference_pair
from skybatch.imaging.flux_ratio import (
    FluxRatio,
    FluxRatioWarning,
    fit_flux_ratio,
    robust_ratio,
)
from skybatch.imaging.inject import (
    Recovery,
    expected_snr,
    inject_point_sources,
    recovery,
)
from skybatch.imaging.psf import (
    PSFEstimate,
    PSFFallbackWarning,
    estimate_psf,
    find_stars,
    gaussian_psf,
    moffat_psf,
    psf_fwhm,
)
from skybatch.imaging.subtiles import (
    StitchedZogy,
    SubTile,
    plan_subtiles,
    zogy_subtiles,
)
from skybatch.imaging.veto import Veto, bright_star_veto
from skybatch.imaging.zogy import ZogyPlan, ZogyResult, zogy

__all__ = [
    "Aligned",
    "Background",
    "CANDIDATE_COLUMNS",
    "ClassicResult",
    "DifferenceOutput",
    "FluxRatio",
    "FluxRatioWarning",
    "PSFEstimate",
    "PSFFallbackWarning",
    "Recovery",
    "StitchedZogy",
    "SubTile",
    "ZogyPlan",
    "ZogyResult",
    "Veto",
    "align_to_grid",
    "bright_star_veto",
    "classic_subtract",
    "cutout_triplets",
    "cutouts",
    "detect_candidates",
    "difference_pair",
    "estimate_background",
    "estimate_psf",
    "expected_false_positives",
    "expected_snr",
    "find_stars",
    "fit_flux_ratio",
    "gaussian_psf",
    "inject_point_sources",
    "moffat_psf",
    "noise_map",
    "pixel_map",
    "plan_subtiles",
    "psf_fwhm",
    "recovery",
    "robust_ratio",
    "same_grid",
    "subtract_background",
    "zogy",
    "zogy_subtiles",
]
