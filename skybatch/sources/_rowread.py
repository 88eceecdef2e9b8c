"""Reads of image rows into reusable per-thread buffers, and checksum sums streamed over the rest of an HDU.

A chunk task reads a few MB of every FLUX/IVAR/MASK image per file. Fresh buffers for those reads
(``f.read`` returns new ``bytes``) cost a page fault per 4 kB on every task in a Dask worker, whose
nanny environment (``MALLOC_TRIM_THRESHOLD_``) hands every large allocation back to the OS on free;
so rows are read with ``readinto`` into buffers kept per thread and per slot (bounded in size).
The bytes stay as stored (big-endian); callers byte-swap them once, into their output rows.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

import numpy as np

from ._fits import _BITPIX_DTYPE, HduEntry, ones_sum
from .base import SourceError

__all__ = ["KEEP_BYTES", "scratch", "read_rows_into", "sum_outside_rows", "row_bytes"]

#: Largest buffer (bytes) kept per thread and slot; larger reads get a fresh buffer each time.
KEEP_BYTES = 8 * 2**20
#: Bytes read at a time by :func:`sum_outside_rows`.
_SUM_BLOCK = 4 * 2**20

_LOCAL = threading.local()


def scratch(slot: Hashable, nbytes: int) -> np.ndarray:
    """A uint8 buffer of ``nbytes`` for ``slot`` in this thread (reused; contents undefined).

    Buffers up to :data:`KEEP_BYTES` are kept for the next call with the same slot (grown when
    needed); larger ones are allocated for this call only, so the memory kept per thread stays
    bounded by the number of slots x KEEP_BYTES.
    """
    if nbytes > KEEP_BYTES:
        return np.empty(nbytes, np.uint8)
    bufs: dict[Hashable, np.ndarray] | None = getattr(_LOCAL, "bufs", None)
    if bufs is None:
        bufs = _LOCAL.bufs = {}
    b = bufs.get(slot)
    if b is None or b.size < nbytes:
        b = bufs[slot] = np.empty(max(nbytes, 1 << 16), np.uint8)
    return b[:nbytes]


def _read_exactly(f, offset: int, out: np.ndarray) -> int:
    """Read ``out.size`` bytes at ``offset`` into ``out``; returns the bytes read (short at end of file)."""
    f.seek(offset)
    n = out.size
    readinto = getattr(f, "readinto", None)
    if readinto is None:  # a file object without readinto: one read, copied
        data = f.read(n)
        got = len(data) if data is not None else 0
        out[:got] = np.frombuffer(data, np.uint8) if got else out[:0]
        return got
    mv = out.data
    got = 0
    while got < n:
        k = readinto(mv[got:])
        if not k:
            break
        got += k
    return got


def row_bytes(entry: HduEntry) -> int:
    """Bytes of one row (axis 0) of an image HDU's data."""
    shape = entry.shape
    per_row = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    return per_row * np.dtype(_BITPIX_DTYPE[entry.bitpix]).itemsize


def read_rows_into(f, entry: HduEntry, a: int, b: int, url: str, slot: Hashable) -> np.ndarray:
    """Rows ``a:b`` (axis 0) of an image HDU as stored (big-endian), read into this thread's ``slot`` buffer.

    Returns a (b - a, ...) view of the buffer, valid until the slot is used again.
    Raises SourceError ``row-mismatch`` (rows outside the image) or ``truncated``.
    """
    shape = entry.shape
    if a < 0 or b > shape[0] or a > b:
        raise SourceError(url, "row-mismatch", f"HDU {entry.name} has {shape[0]} rows but rows {a}:{b} were requested; "
                          "re-plan this file (it may have changed since it was inspected)")
    rb = row_bytes(entry)
    buf = scratch(slot, (b - a) * rb)
    if _read_exactly(f, entry.data_offset + a * rb, buf) < buf.size:
        raise SourceError(url, "truncated", f"HDU {entry.name} ended early while reading rows {a}:{b}; re-download the file")
    return buf.view(np.dtype(_BITPIX_DTYPE[entry.bitpix])).reshape((b - a,) + tuple(shape[1:]))


def sum_outside_rows(f, entry: HduEntry, a: int, b: int, url: str, total: int = 0) -> int:
    """``total`` plus the ones'-complement sum of the HDU's data bytes outside rows ``a:b``.

    With ``total`` the sum of the bytes of rows ``a:b`` (4-byte aligned: rows of 32/64-bit pixels),
    the result is the sum of the whole data, for :func:`~skybatch.sources._fitssum.check_hdu`.
    Streams through a bounded buffer.
    """
    rb = row_bytes(entry)
    for lo, hi in ((0, a * rb), (b * rb, entry.data_size)):
        pos = lo
        while pos < hi:
            n = min(_SUM_BLOCK, hi - pos)
            buf = scratch("checksum", n)
            if _read_exactly(f, entry.data_offset + pos, buf) < n:
                raise SourceError(url, "truncated", f"HDU {entry.name} ended early while checking its DATASUM; "
                                  "re-download the file")
            total = ones_sum(buf, total)
            pos += n
    return total
