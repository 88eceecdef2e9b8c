"""Readers for image tiles: ``.npz`` tiles and FITS images (local paths or ``s3://`` URLs).

A tile source holds one or more **planes**: one (tile, band) image with its noise, on one pixel
grid. Ingest uses the readers in two steps, like the spectra readers
(:mod:`skybatch.sources.base`):

1. **plan**: :func:`inspect_tile_source` reads headers only (FITS headers through ranged reads;
   the ``.npy`` headers inside an ``.npz`` plus its small metadata arrays), and returns a
   :class:`TileSourceInfo` listing every plane: tile id, instrument, band, shape. Anything
   unusable raises :class:`~skybatch.sources.base.SourceError` with a reason tag.
2. **read**: :func:`read_tile_planes` reads the pixels of the planes asked for and returns
   :class:`TilePlane` objects: ``image`` and ``noise`` (1-sigma RMS) float32 (H, W), native byte
   order, ``mask`` uint32, and the WCS as a FITS header string.

Formats
-------
``npz`` (``*.npz``; :func:`skybatch.sample.tiles.write_npz_tiles` writes them):
    ``image`` (n_bands, H, W) or (H, W); the noise as ``rms`` (or ``noise``/``sigma``, 1-sigma),
    ``variance`` (or ``var``) or ``ivar``; optional ``band`` / ``bands`` / ``filter`` (names),
    ``band_key`` (``"rubin_r"``), ``instrument``, ``tile_id``, ``wcs`` (one FITS header string
    per band, or one for all), ``band_present`` / ``present`` (bool per band; absent planes are
    skipped), ``mask`` (integer, same shape as ``image``), ``unit`` / ``bunit``.
``fits`` (``*.fits``, ``*.fit``, ``*.fits.fz``, ``*.fits.gz``):
    HDUs found by EXTNAME, in the two common survey layouts: LSST/Rubin calexp-like
    ``IMAGE`` + ``VARIANCE`` (+ ``MASK``), and Euclid-like ``SCI`` + ``RMS`` (+ ``FLG``). An
    EXTNAME may carry a detector prefix (``"1-1.SCI"``, ``"DET11.SCI"``): each detector is then
    its own tile, ``<tile>.<detector>``. The band comes from the ``BAND``, ``FILTER``,
    ``FILTNAM`` or ``FILTER1`` keyword (image HDU, then primary), else from the last token of
    the file name (``tile_0001_r.fits``); the WCS from the image header (astropy.wcs), else the
    primary header; the unit from ``BUNIT``. Big-endian data come back native; variance becomes
    RMS = sqrt(variance). Tile-compressed HDUs (fpack, ``ZIMAGE``) are decompressed with
    astropy (fpack's default EXTNAME ``COMPRESSED_IMAGE`` is a plain image); whole-file gzip
    (``.fits.gz``) has no byte ranges and is decompressed in memory when read. Integer images
    come back with NaN at their ``BLANK`` pixels; a cube with ``NAXIS3 = 1`` is its 2-D image.
    Any other FITS image is read as a **plain image** (:mod:`skybatch.sources._plain`): the
    image in the primary HDU or the first 2-D image extension (or the ``hdu`` asked for), the
    noise from a VARIANCE / WEIGHT / RMS HDU of the same shape or else estimated from the image
    (``GAIN``, ``RDNOISE``), a MASK / DQ HDU's non-zero pixels bad; instrument ``INSTRUME``
    (else ``generic``), band from ``FILTER`` reduced to its letter (else ``unknown``). Header
    numbers (``SATURATE``, ``GAIN``, ``RDNOISE``, zero point, ``EXPTIME``) of every layout are
    kept in :attr:`TilePlaneInfo.meta`.

Inference rules (documented contract)
-------------------------------------
**instrument**, first that applies: the ``instrument`` argument (a run setting); the npz
``instrument`` key or the ``band_key`` prefix; the FITS ``INSTRUME`` / ``TELESCOP`` keyword
(anything containing LSST, RUBIN, COMCAM or LATISS is ``rubin``; EUCLID, VIS or NISP is
``euclid``; else its lower-case name); a directory in the path named ``rubin``, ``lsst``,
``lsstcam``, ``comcam`` (-> ``rubin``) or ``euclid``, ``nisp`` (-> ``euclid``), deepest first;
the band names (all in u g r i z y, lower case -> ``rubin``; all in VIS Y J H, upper case ->
``euclid``); for FITS the layout (IMAGE/VARIANCE -> ``rubin``, SCI/RMS -> ``euclid``). Failing
all: ``unknown-instrument``.

**band** names are normalised per instrument: Rubin ``u g r i z y`` (lower case; ``r_sim_1.4``,
``LSST_R`` -> ``r``), Euclid ``VIS Y J H`` (upper case; ``NIR_H``, ``NISP_Y``, ``euclid_vis``
accepted). Other instruments keep their names. An npz without band names is accepted when it
has exactly the instrument's full band set, in the canonical order.

**tile id**, first that applies: a ``tile_pattern`` regular expression with a named group
``tile`` matched against the URL; the npz ``tile_id`` key, or the FITS ``TILE_ID`` /
``TILEID`` / ``TILENAME`` keyword; the file name without its extension, and (FITS) without a
trailing ``_<band>`` / ``-<band>`` token.

Pixels: NaN/inf image values and NaN/inf/non-positive noise are **bad**: image = 0, noise = inf
(zero weight), counted in ``n_bad_pixels``. A plane with no finite image pixel at all is
**absent** (``present=False``; image NaN, noise inf), not counted.
"""

from __future__ import annotations

from typing import Any

from .fits import _inspect_fits, _read_fits
from .naming import (
    INSTRUMENT_BANDS,
    TILE_FORMATS,
    TILE_SUFFIXES,
    band_key,
    normalize_band,
    normalize_instrument,
    tile_format,
)
from .npz import _inspect_npz, _read_npz
from .planes import TilePlane, TilePlaneInfo, TileSourceInfo, clean_plane, wcs_header_string

__all__ = [
    "TILE_FORMATS",
    "TILE_SUFFIXES",
    "INSTRUMENT_BANDS",
    "TilePlaneInfo",
    "TileSourceInfo",
    "TilePlane",
    "tile_format",
    "inspect_tile_source",
    "read_tile_planes",
    "normalize_band",
    "normalize_instrument",
    "band_key",
    "clean_plane",
    "wcs_header_string",
]


def inspect_tile_source(
    fs: Any, url: str, *, instrument: str | None = None, tile_pattern: str | None = None, hdu: str | None = None
) -> TileSourceInfo:
    """Read the headers of one tile source and list its planes (no pixels are read).

    fs: an fsspec filesystem for ``url``. instrument: force the instrument of every plane.
    tile_pattern: a regular expression with a named group ``tile`` giving the tile id from the URL.
    hdu: FITS only: read this HDU (EXTNAME or number) as a plain image (see
    :mod:`skybatch.sources._plain`); default the survey layouts, else the first 2-D image.
    Raises SourceError (reason tags: unknown-format, truncated, corrupt,
    missing-hdu, missing-array, not-an-image, unknown-layout, shape-mismatch, unknown-instrument,
    unknown-band, bad-metadata, no-tile-id, unreachable).
    """
    fmt = tile_format(url)
    if fmt == "npz":
        return _inspect_npz(fs, url, instrument, tile_pattern)
    return _inspect_fits(fs, url, instrument, tile_pattern, hdu)


def read_tile_planes(
    fs: Any,
    url: str,
    planes: list[TilePlaneInfo],
    *,
    instrument: str | None = None,
    tile_pattern: str | None = None,
    hdu: str | None = None,
) -> list[TilePlane]:
    """Read the pixels of ``planes`` (from :func:`inspect_tile_source` of the same file and settings).

    The file's headers are checked again first: a plane that is no longer there (or changed
    shape) raises SourceError ``changed``. Returns one :class:`TilePlane` per requested plane,
    in order.
    """
    fmt = tile_format(url)
    if fmt == "npz":
        return _read_npz(fs, url, planes, instrument, tile_pattern)
    return _read_fits(fs, url, planes, instrument, tile_pattern, hdu)
