"""Decode only the needed columns of a FITS binary table with NumPy (no astropy table objects).

A DESI FIBERMAP has ~70 columns; ingest needs five. astropy builds a
``FITS_rec`` with a ``Column`` object per column (most of the cost of
planning a coadd); here the row layout comes from the ``TFORMn`` keywords
and each wanted column is one strided view of the table bytes, converted to
native byte order. Values equal :func:`skybatch.sources._fits.native_column`
of astropy's table: integers and floats as stored (``TZERO = 2**(bits-1)``
read as the unsigned type, as astropy does), strings decoded as ASCII and
stripped. Any column layout this does not cover (variable-length arrays,
bits, complex, scaled columns) makes :func:`read_columns` return None, and
the caller falls back to astropy.
"""

from __future__ import annotations

import math
import re

import numpy as np

from ._fits import HduEntry, _read_at, ones_sum
from ._fitssum import check_hdu
from .base import SourceError

__all__ = ["read_columns"]

_TFORM = re.compile(r"^\s*(\d*)\s*([LXBIJKAEDCMPQ])")
_WIDTH = {"L": 1, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8, "M": 16, "P": 8, "Q": 16}
_DTYPE = {"B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}


def _layout(header) -> dict[str, tuple[int, str, int, int]] | None:
    """Upper-case column name -> (byte offset in a row, TFORM code, repeat, column number); None if odd."""
    try:
        n_fields = int(header["TFIELDS"])
        row_bytes = int(header["NAXIS1"])
    except (KeyError, ValueError, TypeError):
        return None
    cols: dict[str, tuple[int, str, int, int]] = {}
    at = 0
    for i in range(1, n_fields + 1):
        m = _TFORM.match(str(header.get(f"TFORM{i}", "")))
        if m is None:
            return None
        rep = int(m.group(1) or 1)
        code = m.group(2)
        width = math.ceil(rep / 8) if code == "X" else rep * _WIDTH[code]
        name = str(header.get(f"TTYPE{i}", f"COL{i}")).strip().upper()
        cols.setdefault(name, (at, code, rep, i))
        at += width
    return cols if at == row_bytes else None


def read_columns(f, entry: HduEntry, url: str, names: list[str], *, verify: bool = False
                 ) -> dict[str, np.ndarray] | None:
    """Columns ``names`` (case-insensitive; absent ones are left out) of a binary-table HDU.

    Reads the table's data bytes once (the header was scanned already). verify: check the
    HDU's ``DATASUM``/``CHECKSUM`` on those bytes. Returns name (as asked) -> native array of
    shape (NAXIS2,), strings as ``str`` objects; None when a wanted column's layout is not
    covered here (use astropy then).
    """
    h = entry.header
    cols = _layout(h)
    if cols is None or int(h.get("PCOUNT", 0)) != 0:
        return None
    n_rows, row_bytes = int(h["NAXIS2"]), int(h["NAXIS1"])
    plan: list[tuple[str, int, str, bool]] = []
    for want in names:
        c = cols.get(want.upper())
        if c is None:
            continue
        at, code, rep, i = c
        tzero, tscal = h.get(f"TZERO{i}"), h.get(f"TSCAL{i}")
        if code == "A":
            if tzero is not None or tscal is not None:
                return None
            plan.append((want, at, f"S{rep}", False))
            continue
        if code not in _DTYPE or rep != 1 or tscal not in (None, 1):
            return None
        ndt = np.dtype(_DTYPE[code])
        unsigned = code in "IJK" and tzero is not None and int(tzero) == 2 ** (ndt.itemsize * 8 - 1)
        if tzero not in (None, 0) and not unsigned:
            return None
        plan.append((want, at, ndt.str, bool(unsigned)))
    n = entry.data_size
    buf = _read_at(f, entry.data_offset, n)
    if len(buf) < n:
        raise SourceError(url, "truncated", f"HDU {entry.name} ended early while reading its table; re-download the file")
    if verify:
        check_hdu(entry, ones_sum(buf), url)  # the block padding is zeros: it adds nothing
    out: dict[str, np.ndarray] = {}
    for want, at, dt, unsigned in plan:
        raw = np.ndarray((n_rows,), dtype=dt, buffer=buf, offset=at, strides=(row_bytes,))
        if dt.startswith("S"):
            out[want] = np.array([s.decode("ascii", "replace").strip() for s in raw.tolist()], dtype=object)
        elif unsigned:
            udt = np.dtype(dt.replace("i", "u"))
            flip = np.array(1 << (udt.itemsize * 8 - 1), dtype=udt.newbyteorder("="))
            out[want] = raw.view(udt).astype(udt.newbyteorder("=")) ^ flip
        else:
            out[want] = raw.astype(np.dtype(dt).newbyteorder("="))
    return out
