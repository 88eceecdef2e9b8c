"""The byte layout and small tables of a DESI coadd, as planned once per file (see :mod:`skybatch.sources.desi`).

:class:`_Arm` and :class:`_Plan` are what the reader learns from a coadd's
headers, FIBERMAP and redrock file; the table helpers decode only the
columns ingest uses, with NumPy (astropy as the fallback).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import _fits
from . import _fitsread
from ._fitstable import read_columns
from .base import SourceError

__all__ = ["_Arm", "_Plan", "_REDSHIFT_COLUMNS", "_redshift_table", "_fibermap_columns", "_as_uint32"]


@dataclass
class _Arm:
    name: str
    offset: int
    nwave: int
    flux: _fits.HduEntry
    ivar: _fits.HduEntry
    mask: _fits.HduEntry

    def direct(self) -> tuple[bool, int]:
        """(True, mask XOR) when the arm's bytes can go straight into chunk buffers (:meth:`read_into`).

        Flux/ivar: float images without BSCALE/BZERO; mask: 32-bit integers, signed (iron) or
        unsigned by the FITS convention (BZERO = 2**31, EDR/fuji).
        """
        for e in (self.flux, self.ivar):
            if e.bitpix not in (-32, -64) or e.header.get("BSCALE", 1) != 1 or e.header.get("BZERO", 0) != 0:
                return False, 0
        h = self.mask.header
        if self.mask.bitpix != 32 or h.get("BSCALE", 1) != 1 or h.get("BZERO", 0) not in (0, 2**31):
            return False, 0
        return True, (2**31 if h.get("BZERO", 0) == 2**31 else 0)


@dataclass
class _Plan:
    layout: _fits.FitsLayout
    arms: list[_Arm]
    nspec: int
    targetid: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    objtype: np.ndarray
    fiberstatus: np.ndarray
    science: np.ndarray
    survey: str
    program: str
    healpix: np.ndarray
    redrock_url: str | None
    redrock_layout: _fits.FitsLayout | None
    checksum: str
    redshifts: dict[str, np.ndarray] | None = field(default=None)


_REDSHIFT_COLUMNS = (
    ("z", "Z", np.float64), ("zwarn", "ZWARN", np.int64), ("zerr", "ZERR", np.float64),
    ("deltachi2", "DELTACHI2", np.float64), ("spectype", "SPECTYPE", object), ("subtype", "SUBTYPE", object),
)


def _redshift_table(f, entry: _fits.HduEntry, url: str, verify: bool) -> dict[str, np.ndarray]:
    """TARGETID and the redshift columns of a redrock REDSHIFTS table (upper-case names), decoded with NumPy."""
    return _named_columns(f, entry, url, ["TARGETID"] + [c for _, c, _ in _REDSHIFT_COLUMNS], verify)


_FIBERMAP_COLUMNS = ["TARGETID", "TARGET_RA", "TARGET_DEC", "OBJTYPE", "COADD_FIBERSTATUS"]


def _fibermap_columns(f, entry: _fits.HduEntry, url: str, verify: bool) -> dict[str, np.ndarray]:
    """The FIBERMAP columns ingest uses (upper-case names; absent ones left out), decoded with NumPy.

    Falls back to astropy's table for layouts :func:`~skybatch.sources._fitstable.read_columns`
    does not cover; the values are the same either way.
    """
    return _named_columns(f, entry, url, _FIBERMAP_COLUMNS, verify)


def _named_columns(f, entry: _fits.HduEntry, url: str, names: list[str], verify: bool) -> dict[str, np.ndarray]:
    """The columns ``names`` (upper case) of a binary table HDU, absent ones left out, decoded with NumPy
    (:func:`~skybatch.sources._fitstable.read_columns`; astropy's table for the layouts it does not cover)."""
    got = read_columns(f, entry, url, names, verify=verify)
    if got is not None:
        return got
    table = _fitsread.read_table(f, entry, url, verify=verify)
    cols = {c.upper(): c for c in _fitsread.table_columns(table)}
    return {k: _fitsread.native_column(table, cols[k]) for k in names if k in cols}


def _as_uint32(mask: np.ndarray, hdu: str, url: str) -> np.ndarray:
    """Bit masks as uint32: int32 (iron) is reinterpreted bit for bit."""
    if mask.dtype == np.uint32:
        return np.ascontiguousarray(mask)
    if mask.dtype == np.int32:
        return np.ascontiguousarray(mask).view(np.uint32)
    if mask.dtype.kind in "iu" and mask.dtype.itemsize <= 4:
        return mask.astype(np.uint32)
    raise SourceError(url, "corrupt", f"HDU {hdu} has dtype {mask.dtype}; expected a 32-bit integer bit mask")
