"""The stored layout of a Zarr v3 array split along axis 0 only, as skybatch's own readers and writers see it.

:mod:`skybatch.store.shardwrite` (whole-shard writes) and :mod:`skybatch.store.local_decode`
(direct local reads) both bypass zarr for the layouts skybatch creates; :func:`axis0_layout`
recognises those layouts once for both: one ``sharding_indexed`` codec (index ``bytes`` little
endian + ``crc32c``) holding ``[bytes, compressor]``, or unsharded ``[bytes|vlen-utf8, compressor]``,
with stored objects and inner chunks that hold whole rows. Anything else is ``None``: the caller uses zarr.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["EMPTY_CHUNK", "Axis0Layout", "axis0_layout"]

#: a shard index entry (offset, length) of an inner chunk that is not stored
EMPTY_CHUNK = np.uint64(2**64 - 1)


@dataclass(frozen=True)
class Axis0Layout:
    """object_rows: rows per stored object (shard, or chunk when unsharded); inner_rows: rows per
    compressed chunk (== object_rows when unsharded); index_at_end: where a shard's index sits;
    strings: the chunk codec is ``vlen-utf8`` (unsharded only) instead of ``bytes``; compressor: the
    zarr codec after it (e.g. ``BloscCodec``, ``ZstdCodec``)."""

    object_rows: int
    inner_rows: int
    sharded: bool
    index_at_end: bool
    strings: bool
    compressor: Any


def _little_bytes(codec: Any, *, endian_required: bool = False) -> bool:
    from zarr.codecs import BytesCodec

    if not isinstance(codec, BytesCodec):
        return False
    return codec.endian.value == "little" if codec.endian is not None else not endian_required


def axis0_layout(arr: Any) -> Axis0Layout | None:
    """The :class:`Axis0Layout` of the zarr array ``arr``, or None when it is not one of those layouts."""
    try:
        from zarr.codecs import Crc32cCodec, ShardingCodec
        from zarr.codecs.sharding import ShardingCodecIndexLocation
        from zarr.codecs.vlen_utf8 import VLenUTF8Codec
    except ImportError:  # another zarr
        return None
    meta: Any = getattr(arr, "metadata", None)
    codecs = tuple(getattr(meta, "codecs", None) or ())
    if getattr(meta, "zarr_format", None) != 3 or not codecs or not arr.shape:
        return None
    shape = tuple(int(s) for s in arr.shape)
    grid = tuple(int(c) for c in meta.chunk_grid.chunk_shape)
    if grid[1:] != shape[1:]:
        return None
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        sc = codecs[0]
        inner = tuple(int(c) for c in sc.chunk_shape)
        idx, chunk = tuple(sc.index_codecs), tuple(sc.codecs)
        if (inner[1:] != shape[1:] or grid[0] % inner[0] or len(idx) != 2
                or not _little_bytes(idx[0], endian_required=True) or not isinstance(idx[1], Crc32cCodec)
                or len(chunk) != 2 or not _little_bytes(chunk[0])):
            return None
        return Axis0Layout(grid[0], inner[0], True, sc.index_location == ShardingCodecIndexLocation.end, False,
                           chunk[1])
    if len(codecs) != 2:
        return None
    strings = isinstance(codecs[0], VLenUTF8Codec)
    if not strings and not _little_bytes(codecs[0]):
        return None
    return Axis0Layout(grid[0], grid[0], False, True, strings, codecs[1])
