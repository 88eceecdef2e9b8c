"""Survey file readers: FITS on local disk or S3 -> spectra on a store grid.

``READERS`` maps a format name to a reader following
:class:`~skybatch.sources.base.SpectraReader`:

======== ====================================== ===============================
format   files                                  grid
======== ====================================== ===============================
desi     DESI ``coadd-*.fits`` (+ ``redrock-``)  desi-brz, 3600–9824 Å / 0.8 Å
sdss     SDSS/BOSS ``spec-*.fits``               sdss-loglam, 3.55 + 1e-4·k
skyvac   DESI sky-spectra VAC                    desi-brz
======== ====================================== ===============================

:func:`detect_format` tells them apart from HDU names and header keywords.
"""

from __future__ import annotations

from typing import Any

from . import _fits
from ._common import DESI_BRZ_GRID, SDSS_LOGLAM_GRID, healpix_nest64
from .base import META_COLUMNS, Grid, SourceError, SourceInfo, SpectraBlock, SpectraReader
from .desi import DesiCoaddReader, redrock_url_for
from .sdss import SdssSpecReader, specobjid_to_targetid
from .skyvac import SKY_CONDITIONS, SkyVacReader, select_sky_conditions

__all__ = [
    "READERS",
    "get_reader",
    "detect_format",
    "DesiCoaddReader",
    "SdssSpecReader",
    "SkyVacReader",
    "select_sky_conditions",
    "SKY_CONDITIONS",
    "redrock_url_for",
    "specobjid_to_targetid",
    "healpix_nest64",
    "DESI_BRZ_GRID",
    "SDSS_LOGLAM_GRID",
    "Grid",
    "SourceInfo",
    "SpectraBlock",
    "SourceError",
    "SpectraReader",
    "META_COLUMNS",
]

#: format name -> reader instance.
READERS: dict[str, SpectraReader] = {
    "desi": DesiCoaddReader(),
    "sdss": SdssSpecReader(),
    "skyvac": SkyVacReader(),
}


def get_reader(format: str) -> SpectraReader:
    """The reader for ``format`` (``"desi"``, ``"sdss"`` or ``"skyvac"``).

    Raises ValueError naming the known formats for anything else.
    """
    try:
        return READERS[format.strip().lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown spectra format {format!r}; known formats: {sorted(READERS)}") from None


def _classify(names: list[str], layout: _fits.FitsLayout | None = None) -> str | None:
    s = set(names)
    if "FIBERMAP" in s and any(n.endswith("_FLUX") for n in s):
        return "desi"
    if "COADD" in s and ("SPALL" in s or "SPECOBJ" in s):
        return "sdss"
    if "COADD" in s and layout is not None and (e := layout.get("COADD")) is not None:
        ttypes = {str(v).strip() for k, v in e.header.items() if k.startswith("TTYPE")}
        if "loglam" in ttypes:
            return "sdss"
    if {"WAVELENGTH", "FLUX", "METADATA"} <= s:
        return "skyvac"
    return None


def detect_format(fs: Any, url: str) -> str:
    """The spectra format of a file, from its HDU names and header keywords.

    Reads headers only (stopping as soon as the format is clear):
    FIBERMAP + ``*_FLUX`` HDUs -> ``"desi"``; COADD + SPALL/SPECOBJ (or a COADD
    table with a lower-case ``loglam`` column) -> ``"sdss"``; WAVELENGTH +
    FLUX + METADATA -> ``"skyvac"``. The file name is not used.

    Raises SourceError with reason ``unknown-format`` for anything else (a
    text file, an image FITS, a redrock file), ``unreachable`` if it cannot
    be opened, and ``truncated``/``corrupt`` if the file is damaged before
    its format could be recognised.
    """
    size, _ = _fits.file_size(fs, url)
    with _fits.open_source(fs, url, size) as f:
        lay = _fits.scan_fits(f, url, size, stop=lambda names: _classify(names) is not None, partial_ok=True,
                              fast_headers=True)
    fmt = _classify(lay.names, lay)
    if fmt is not None:
        return fmt
    if lay.error is not None:
        raise lay.error
    if "REDSHIFTS" in lay.names:
        raise SourceError(
            url, "unknown-format",
            "this is a redrock redshift file (REDSHIFTS HDU, no spectra); ingest the matching coadd-*.fits instead",
        )
    raise SourceError(
        url, "unknown-format",
        f"no spectra HDUs found (HDUs: {lay.names}); skybatch reads DESI coadd (FIBERMAP + B/R/Z_FLUX), "
        "SDSS spec (COADD + SPALL) and DESI sky-VAC (WAVELENGTH + FLUX + METADATA) files",
    )
