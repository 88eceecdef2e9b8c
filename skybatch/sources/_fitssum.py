"""FITS ``DATASUM`` / ``CHECKSUM`` checks (the 32-bit ones'-complement sums of the FITS standard) of one
HDU on the bytes a read already holds, or of a whole file in one pass."""

from __future__ import annotations

import numpy as np

from ._fits import FitsLayout, HduEntry, _fold, _pad, _read_at
from .base import SourceError

__all__ = ["check_hdu", "verify_checksums"]


def check_hdu(entry: HduEntry, data_sum: int, url: str) -> bool:
    """Check an HDU's ``DATASUM`` and ``CHECKSUM`` against the ones'-complement sum of its data bytes.

    data_sum: :func:`ones_sum` of the HDU's data (padding counts as zeros). ``CHECKSUM`` also
    uses the header's sum kept by the scan (``entry.header_sum``). Returns True when a keyword
    was checked, False when the HDU has neither. Raises ``SourceError(reason="checksum")``
    naming the HDU on a mismatch.
    """
    ds, cs = entry.header.get("DATASUM"), entry.header.get("CHECKSUM")
    if ds is None and cs is None:
        return False
    data_sum = _fold(data_sum)
    if ds is not None:
        try:
            want = int(str(ds).strip())
        except ValueError:
            raise SourceError(url, "checksum", f"HDU {entry.index} ({entry.name}) has an unreadable DATASUM {ds!r}; "
                              "the file is damaged, re-download it") from None
        if want != data_sum:
            raise SourceError(
                url, "checksum",
                f"HDU {entry.index} ({entry.name}) fails its DATASUM check (recorded {want}, computed {data_sum}): its "
                "data bytes changed after it was written; re-download the file",
            )
    if cs is not None and _fold(entry.header_sum + data_sum) != 0xFFFFFFFF:
        raise SourceError(
            url, "checksum",
            f"HDU {entry.index} ({entry.name}) fails its CHECKSUM check (header or data bytes changed after it was "
            "written); re-download the file",
        )
    return True


def _ones_sum(f, offset: int, nbytes: int, block: int = 1 << 23) -> int:
    """32-bit ones'-complement sum of ``nbytes`` (a multiple of 4) from ``offset`` (FITS checksum arithmetic)."""
    total = 0
    at = 0
    while at < nbytes:
        n = min(block, nbytes - at)
        raw = _read_at(f, offset + at, n)
        if len(raw) < n:  # past the end of the file: FITS padding counts as zeros
            raw = raw + b"\0" * (n - len(raw))
        total += int(np.frombuffer(raw, dtype=">u4").sum(dtype=np.uint64))
        while total >> 32:
            total = (total & 0xFFFFFFFF) + (total >> 32)
        at += n
    return total


def verify_checksums(f, layout: FitsLayout, url: str) -> int:
    """Check every HDU's FITS ``DATASUM`` (data) and ``CHECKSUM`` (header + data) where present.

    Reads each HDU's data once, in blocks of 8 MB; ``CHECKSUM`` uses the header sums the scan of
    ``layout`` kept (:attr:`HduEntry.header_sum`), so scan ``f`` itself, not an older copy of the file.
    Returns the number of HDUs checked. Raises ``SourceError(reason="checksum")`` naming the HDU on the
    first mismatch (:func:`check_hdu`).
    """
    checked = 0
    for e in layout.entries:
        if e.header.get("DATASUM") is None and e.header.get("CHECKSUM") is None:
            continue
        data_sum = _ones_sum(f, e.data_offset, _pad(e.data_size)) if e.data_size else 0
        checked += check_hdu(e, data_sum, url)
    return checked
