"""Read the rows of a file's arm images straight into a chunk's rows, block by block, in bounded memory.

:func:`read_arms_into` walks the file rows spanned by the rows wanted in blocks of at most
``block_bytes`` (all arm images together): each block of every FLUX/IVAR/MASK image is read once
(``readinto`` a per-thread buffer, :mod:`._rowread`), the wanted rows are gathered (only when
the rows are not contiguous), and the arms are combined into the output rows, byte-swapping once
(:func:`~skybatch.sources._arms.combine_arms_into`). The result is bit for bit that of reading
the rows, cleaning each arm and calling :func:`skybatch.spectra.camera_coadd.coadd_cameras`.

With ``verify``, each image's DATASUM/CHECKSUM is checked on the bytes read plus the rest of the
image's data, streamed (no whole-image buffer).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._arms import combine_arms_into
from ._fits import HduEntry, ones_sum
from ._fitssum import check_hdu
from ._rowread import read_rows_into, row_bytes, scratch, sum_outside_rows

__all__ = ["read_arms_into", "BLOCK_BYTES"]

#: Bytes of all arm images read per block on a local filesystem (a remote one reads the whole span at once).
BLOCK_BYTES = 16 * 2**20


def read_arms_into(
    f,
    arms: Sequence[tuple[HduEntry, HduEntry, HduEntry]],
    offsets: Sequence[int],
    mask_xor: Sequence[int],
    rows: np.ndarray,
    url: str,
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray,
    *,
    nodata_bit: int,
    verify: bool = False,
    block_bytes: int = BLOCK_BYTES,
) -> int:
    """Fill ``flux``/``ivar``/``mask`` (each (rows.size, n_wave)) with file rows ``rows``, arms combined.

    arms: per arm, the (FLUX, IVAR, MASK) image HDUs (float flux/ivar without BSCALE/BZERO, 32-bit
        masks), all with the file's rows on axis 0; offsets: each arm's first output pixel;
        mask_xor: per arm, XOR-ed into the mask (2**31 for BZERO = 2**31 unsigned masks).
    rows: strictly increasing file rows.
    verify: check every image's DATASUM/CHECKSUM (SourceError ``checksum`` on a mismatch).
    block_bytes: bytes of all images read per block (bounds the per-thread buffers).

    Returns the number of NaN/inf pixels cleaned.
    """
    n = int(rows.size)
    if n == 0:
        return 0
    images = [e for trio in arms for e in trio]
    per_row = sum(row_bytes(e) for e in images)
    a, b = int(rows[0]), int(rows[-1]) + 1
    step = max(1, int(block_bytes) // max(per_row, 1))
    sums = [0] * len(images)
    n_bad = 0
    at = 0
    for r0 in range(a, b, step):
        r1 = min(b, r0 + step)
        i0, i1 = int(np.searchsorted(rows, r0)), int(np.searchsorted(rows, r1))
        m = i1 - i0
        if m == 0 and not verify:
            continue
        gather = m != r1 - r0
        idx = rows[i0:i1] - r0 if gather else None
        blocks: list[np.ndarray] = []
        for j, e in enumerate(images):
            raw = read_rows_into(f, e, r0, r1, url, ("rows", j))
            if verify:
                sums[j] = ones_sum(raw.view(np.uint8).reshape(-1), sums[j])
            if idx is not None:
                out = scratch(("gather", j), m * row_bytes(e)).view(raw.dtype).reshape((m,) + raw.shape[1:])
                np.take(raw, idx, axis=0, out=out, mode="clip")
                raw = out
            blocks.append(raw)
        if m:
            rows_out = slice(at, at + m)
            n_bad += combine_arms_into(
                blocks[0::3], blocks[1::3], blocks[2::3], offsets, flux[rows_out], ivar[rows_out], mask[rows_out],
                nodata_bit=nodata_bit, mask_xor=mask_xor,
            )
            at += m
    if verify:
        for j, e in enumerate(images):
            check_hdu(e, sum_outside_rows(f, e, a, b, url, sums[j]), url)
    return n_bad
