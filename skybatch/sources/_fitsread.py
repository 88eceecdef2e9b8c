"""Ranged reads of FITS data on fsspec file objects: whole images, runs of image rows, raw rows with
their checksum sum, and small binary tables parsed from exactly their own bytes (the layout comes from
:func:`skybatch.sources._fits.scan_fits`; failures are :class:`~skybatch.sources.base.SourceError`)."""

from __future__ import annotations


import numpy as np

from ._fits import _BITPIX_DTYPE, HduEntry, _pad, _read_at, ones_sum
from ._fitssum import check_hdu
from .base import SourceError

__all__ = ["read_image", "read_image_rows", "read_rows_raw", "read_table", "native_column", "table_columns"]


def _physical(raw: np.ndarray, header) -> np.ndarray:
    """Apply BZERO/BSCALE, returning a native-endian array.

    Integer images with BZERO = 2**(bits-1) and BSCALE = 1 are the FITS
    unsigned-integer convention and come back as the unsigned type.
    """
    bzero = header.get("BZERO", 0)
    bscale = header.get("BSCALE", 1)
    if raw.dtype.kind in "iu" and bscale == 1 and bzero == 2 ** (raw.dtype.itemsize * 8 - 1):
        udt = np.dtype(f">u{raw.dtype.itemsize}")
        flip = np.array(1 << (raw.dtype.itemsize * 8 - 1), dtype=udt.newbyteorder("="))
        return raw.view(udt).astype(udt.newbyteorder("=")) ^ flip
    out = raw.astype(raw.dtype.newbyteorder("="))
    if bscale != 1 or bzero != 0:
        out = out * np.float64(bscale) + np.float64(bzero)
        if raw.dtype.kind == "f" and raw.dtype.itemsize == 4:
            out = out.astype(np.float32)
    return out


def read_image(f, entry: HduEntry, url: str, *, verify: bool = False, blank_to_nan: bool = False) -> np.ndarray:
    """Read a whole (small) image HDU, physical values, native byte order.

    verify: check the HDU's ``DATASUM``/``CHECKSUM`` on the bytes read (:func:`check_hdu`).
    blank_to_nan: an integer image with a ``BLANK`` keyword comes back as floating point
        (float32 for 8/16-bit data without scaling, else float64) with NaN at the pixels whose
        stored value is ``BLANK`` (the FITS undefined-pixel convention); without it those
        pixels keep the number ``BLANK * BSCALE + BZERO``.
    """
    dt = np.dtype(_BITPIX_DTYPE[entry.bitpix])
    buf = _read_at(f, entry.data_offset, entry.data_size)
    if len(buf) < entry.data_size:
        raise SourceError(url, "truncated", f"HDU {entry.name} ended early while reading its data; re-download the file")
    if verify:
        check_hdu(entry, ones_sum(buf), url)
    raw = np.frombuffer(buf, dtype=dt).reshape(entry.shape)
    phys = _physical(raw, entry.header)
    blank = entry.header.get("BLANK") if blank_to_nan and dt.kind in "iu" else None
    if blank is None:
        return phys
    try:
        blank = int(blank)
    except (TypeError, ValueError):
        return phys  # a malformed BLANK card: no undefined pixels declared
    undefined = raw == blank
    small = dt.itemsize <= 2 and phys.dtype.kind in "iu"
    out = phys.astype(np.float32 if small else np.float64, copy=phys.dtype.kind != "f")
    out[undefined] = np.nan
    return out


def _runs(rows: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
    """Split sorted row indices into [a, b) spans, merging gaps up to ``max_gap`` rows."""
    if rows.size == 0:
        return []
    cuts = np.nonzero(np.diff(rows) > max_gap + 1)[0]
    starts = np.concatenate([[0], cuts + 1])
    stops = np.concatenate([cuts, [rows.size - 1]])
    return [(int(rows[a]), int(rows[b]) + 1) for a, b in zip(starts, stops)]


def read_image_rows(f, entry: HduEntry, rows: np.ndarray, url: str, *, max_gap: int = 4) -> np.ndarray:
    """Read the given rows (axis 0) of an image HDU with ranged reads.

    rows: row indices (any order, repeats allowed). Contiguous runs of the
    sorted unique rows (gaps of at most ``max_gap`` unwanted rows are
    bridged) are read with one read each, so only about
    ``len(rows) * row_bytes`` bytes are fetched.
    Returns physical values, native byte order, shape (len(rows), *shape[1:]),
    in the order of ``rows``.
    """
    shape = entry.shape
    dt = np.dtype(_BITPIX_DTYPE[entry.bitpix])
    per_row = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    row_bytes = per_row * dt.itemsize
    rows = np.asarray(rows, dtype=np.int64)
    uniq, inverse = np.unique(rows, return_inverse=True)
    if uniq.size and (uniq[0] < 0 or uniq[-1] >= shape[0]):
        raise SourceError(
            url, "row-mismatch", f"HDU {entry.name} has {shape[0]} rows but rows {int(uniq[0])}..{int(uniq[-1])} "
            "were requested; re-plan this file (it may have changed since it was inspected)"
        )
    runs = _runs(uniq, max_gap)
    if len(runs) == 1 and runs[0][1] - runs[0][0] == uniq.size and uniq.size == rows.size and np.array_equal(uniq, rows):
        a, b = runs[0]  # one contiguous run of exactly the rows asked for: no gather copy
        buf = _read_at(f, entry.data_offset + a * row_bytes, (b - a) * row_bytes)
        if len(buf) < (b - a) * row_bytes:
            raise SourceError(url, "truncated", f"HDU {entry.name} ended early while reading rows {a}:{b}; re-download the file")
        return _physical(np.frombuffer(buf, dtype=dt).reshape((b - a,) + tuple(shape[1:])), entry.header)
    out = np.empty((uniq.size,) + tuple(shape[1:]), dtype=dt)
    pos = 0
    for a, b in runs:
        buf = _read_at(f, entry.data_offset + a * row_bytes, (b - a) * row_bytes)
        if len(buf) < (b - a) * row_bytes:
            raise SourceError(url, "truncated", f"HDU {entry.name} ended early while reading rows {a}:{b}; re-download the file")
        block = np.frombuffer(buf, dtype=dt).reshape((b - a,) + tuple(shape[1:]))
        want = uniq[(uniq >= a) & (uniq < b)] - a
        out[pos : pos + want.size] = block[want]
        pos += want.size
    phys = _physical(out, entry.header)
    if uniq.size == rows.size and np.array_equal(uniq, rows):
        return phys
    return phys[inverse.reshape(-1)]


def read_rows_raw(f, entry: HduEntry, a: int, b: int, url: str, *, whole: bool = False) -> tuple[np.ndarray, int | None]:
    """Rows ``a:b`` (axis 0) of an image HDU as stored: a big-endian view of one contiguous read.

    whole: read the whole HDU data instead (one read) and also return the ones'-complement sum of
    it (for :func:`check_hdu`); the rows ``a:b`` are a view into it. Otherwise the sum is None.
    No BZERO/BSCALE is applied: the caller assigns (byte-swapping) into native buffers.
    """
    shape = entry.shape
    dt = np.dtype(_BITPIX_DTYPE[entry.bitpix])
    per_row = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    row_bytes = per_row * dt.itemsize
    if a < 0 or b > shape[0] or a > b:
        raise SourceError(url, "row-mismatch", f"HDU {entry.name} has {shape[0]} rows but rows {a}:{b} were requested; "
                          "re-plan this file (it may have changed since it was inspected)")
    lo, hi = (0, shape[0]) if whole else (a, b)
    n = (hi - lo) * row_bytes
    buf = _read_at(f, entry.data_offset + lo * row_bytes, n)
    if len(buf) < n:
        raise SourceError(url, "truncated", f"HDU {entry.name} ended early while reading rows {lo}:{hi}; re-download the file")
    arr = np.frombuffer(buf, dtype=dt).reshape((hi - lo,) + tuple(shape[1:]))
    total = ones_sum(buf) if whole else None
    return arr[a - lo : b - lo], total


def read_table(f, entry: HduEntry, url: str, *, verify: bool = False):
    """Parse one binary-table HDU from exactly its own bytes.

    Returns an astropy ``FITS_rec`` (columns by name, TZERO/TSCAL applied
    on access). Use :func:`native_column` to get native NumPy arrays.
    verify: check the HDU's ``DATASUM``/``CHECKSUM`` on the bytes read (:func:`check_hdu`).
    """
    from astropy.io import fits

    n = entry.data_offset - entry.header_offset + _pad(entry.data_size)
    buf = _read_at(f, entry.header_offset, n)
    need = entry.data_offset - entry.header_offset + entry.data_size
    if len(buf) < need:
        raise SourceError(url, "truncated", f"HDU {entry.name} ended early while reading its table; re-download the file")
    if len(buf) < n:
        buf = buf + b"\x00" * (n - len(buf))
    if verify:
        head = entry.data_offset - entry.header_offset
        check_hdu(entry, ones_sum(buf[head:]), url)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdu = fits.BinTableHDU.fromstring(buf)
            data = hdu.data
    except Exception as e:
        raise SourceError(url, "corrupt", f"cannot parse table HDU {entry.name} ({e}); re-download the file") from e
    return data


def native_column(table, name: str) -> np.ndarray:
    """One table column as a native-endian NumPy array (strings as ``str`` objects)."""
    col = np.asarray(table[name])
    if col.dtype.kind == "S":
        return np.array([s.decode("ascii", "replace").strip() for s in col.ravel()], dtype=object).reshape(col.shape)
    if col.dtype.kind == "U":
        return np.array([s.strip() for s in col.ravel()], dtype=object).reshape(col.shape)
    if col.dtype.byteorder not in ("=", "|"):
        col = col.astype(col.dtype.newbyteorder("="))
    return col


def table_columns(table) -> list[str]:
    """Column names of a FITS_rec in file order."""
    return list(table.columns.names)
