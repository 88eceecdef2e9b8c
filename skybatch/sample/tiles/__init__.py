"""Generated multi-band Rubin + Euclid image tiles with known ground truth.

The same sources (stars and small galaxies) are rendered in all ten bands (Rubin u g r i z y,
Euclid VIS Y J H) on one common pixel grid, with what changes between bands in real data:

- **PSF**: Gaussian, FWHM from the band (Rubin seeing ~0.65–0.80", Euclid VIS 0.18", NISP
  0.36–0.46"), plus the pixel response (a 1/12 px² variance term).
- **Depth / noise**: sky noise per pixel from each band's 5σ point-source depth (AB), a smooth
  ±10 % variation across the tile, and source Poisson noise; the noise map is the 1σ RMS.
- **Colours**: per-source SEDs. Stars are black bodies (3500–11000 K); galaxies have a blue
  exponential-ish disk and a red, compact bulge with a 4000 Å break at their redshift, so
  morphology changes with band.
- **Sources missing in some bands**: Lyman-break dropouts (zero flux blueward of
  121.6 nm × (1 + z), z = 3.5–6.5) and single-epoch transients seen by one instrument only.
- **Astrometry**: a small sub-pixel offset per tile and band (recorded, and written into the
  WCS of the ``.npz`` files).
- **Missing bands**: some tiles lack a band (not observed) or all of Euclid (outside the
  footprint); those planes are NaN and ``band_present`` is False.

Fluxes are in nJy per pixel (AB zero point 31.4). Pure NumPy; 300 tiles of 64×64 px in all
ten bands take about a second.
"""

from __future__ import annotations

from .files import _wcs_header, write_npz_tiles  # noqa: F401  (_wcs_header: used by tests and benchmarks)
from .multiband import make_multiband_tiles, make_survey_views
from .render import BAND_DEPTH_AB, BAND_PSF_FWHM_ARCSEC, MultiBandTiles
from .views import REAL_PIXEL_SCALES, SurveyViews

__all__ = [
    "BAND_PSF_FWHM_ARCSEC",
    "BAND_DEPTH_AB",
    "MultiBandTiles",
    "REAL_PIXEL_SCALES",
    "SurveyViews",
    "make_multiband_tiles",
    "make_survey_views",
    "write_npz_tiles",
]
