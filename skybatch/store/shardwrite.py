"""Whole-shard (and whole-chunk) writes of Zarr v3 arrays, encoded in the calling thread without zarr's write path.

zarr 3.1 writes every region of a sharded array through its *partial* shard encoder, even a region
that covers whole shards: per inner chunk it allocates a fill-valued chunk, copies the values into
it and encodes it on a thread, then concatenates the shard (~60 % of the CPU of an ingest store
write beyond the compression itself). A task that writes whole shards (ingest: one shard per task,
never shared) needs none of that: :func:`encode_shard` compresses each inner chunk straight from
the caller's rows with the array's own codecs and lays the shard out exactly as zarr does (inner
chunks in Morton order, then the little-endian uint64 (offset, length) index and its CRC32C), so
the stored bytes are the ones zarr writes and any Zarr v3 reader reads them.

The per-spectrum columns (one unsharded chunk per task, ``[bytes, zstd]`` or ``[vlen-utf8, zstd]``)
are encoded the same way: one codec call each, instead of a trip through zarr's async pipeline.

Only the layouts skybatch creates are taken (``[bytes, blosc|zstd]`` inside one sharding codec,
index ``[bytes(little), crc32c]`` at the end, or ``[bytes|vlen-utf8, blosc|zstd]`` unsharded; native
little-endian values, rows split on axis 0, ``write_empty_chunks`` on); :func:`plan_shard_writes`
returns None for anything else and the caller writes with zarr.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from skybatch.store.axis0_layout import EMPTY_CHUNK, axis0_layout

__all__ = ["ShardWriter", "shard_writer", "plan_shard_writes", "encode_shard", "write_region"]

class ShardWriter:
    """How to encode whole shards of one array (built by :func:`shard_writer`).

    shard_rows / chunk_rows: rows (axis 0) per stored object and per inner chunk (equal: an
    unsharded array, one chunk per object); compress: bytes -> bytes of the chunk codec (numcodecs
    Blosc or Zstd, configured as the array's codec); strings: values are str, encoded VLenUTF8 first.
    """

    def __init__(self, shard_rows: int, chunk_rows: int, dtype: np.dtype, compress: Any, order: list[int],
                 sharded: bool = True, strings: bool = False):
        self.shard_rows = shard_rows
        self.chunk_rows = chunk_rows
        self.dtype = dtype
        self.compress = compress
        self.order = order  # inner chunk indices in Morton order (the order of their bytes in the shard)
        self.sharded = sharded
        self.strings = strings

    def accepts(self, values: np.ndarray) -> bool:
        """Whether ``values`` can be encoded as they are (the array's dtype; str objects for strings)."""
        return values.dtype.kind == "O" if self.strings else values.dtype == self.dtype


def _inner_compressor(codec: Any, itemsize: int) -> Any | None:
    """A numcodecs codec giving the bytes zarr's BloscCodec / ZstdCodec gives, else None."""
    from zarr.codecs import BloscCodec, ZstdCodec

    if isinstance(codec, BloscCodec):
        if codec.typesize is None or codec.shuffle is None or codec.typesize != itemsize:
            return None
        from numcodecs import Blosc

        shuffle = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}
        return Blosc(cname=codec.cname.name, clevel=codec.clevel, shuffle=shuffle[codec.shuffle.name],
                     blocksize=codec.blocksize, typesize=codec.typesize)
    if isinstance(codec, ZstdCodec):
        from numcodecs import Zstd

        return Zstd(level=codec.level, checksum=codec.checksum)
    return None


def _little(dtype: np.dtype) -> bool:
    return dtype.byteorder in ("<", "|") or (dtype.byteorder == "=" and sys.byteorder == "little")


def shard_writer(arr: Any) -> ShardWriter | None:
    """The :class:`ShardWriter` of a zarr array, or None when its layout is not one this module encodes."""
    layout = axis0_layout(arr)
    if layout is None or not layout.index_at_end or not arr.config.write_empty_chunks:
        return None
    if layout.strings:
        dtype = np.dtype(object)
    else:
        dtype = np.dtype(arr.dtype)
        if dtype.kind not in "fiu" or not _little(dtype):
            return None
    compress = _inner_compressor(layout.compressor, dtype.itemsize)
    if compress is None:
        return None
    if not layout.sharded:
        return ShardWriter(layout.object_rows, layout.object_rows, dtype, compress, [0], sharded=False,
                           strings=layout.strings)
    from zarr.core.indexing import morton_order_iter

    per_shard = (layout.object_rows // layout.inner_rows,) + (1,) * (len(arr.shape) - 1)
    order = [c[0] for c in morton_order_iter(per_shard)]
    return ShardWriter(layout.object_rows, layout.inner_rows, dtype, compress, order)


def encode_shard(w: ShardWriter, rows: np.ndarray) -> bytes:
    """The stored bytes of one whole shard holding ``rows`` ((shard_rows, ...) values of ``w.dtype``)."""
    import google_crc32c

    if rows.shape[0] != w.shard_rows or not w.accepts(rows):
        raise ValueError(f"encode_shard: rows of shape {rows.shape} / {rows.dtype}, expected {w.shard_rows} rows of {w.dtype}")
    if w.strings:
        from numcodecs import VLenUTF8

        return bytes(w.compress.encode(VLenUTF8().encode(rows)))
    rows = np.ascontiguousarray(rows)
    if not w.sharded:
        return bytes(w.compress.encode(rows.reshape(-1).view(np.uint8)))
    n_chunks = w.shard_rows // w.chunk_rows
    index = np.full((n_chunks, 2), EMPTY_CHUNK, dtype="<u8")
    parts: list[bytes] = []
    at = 0
    for i in w.order:
        block = rows[i * w.chunk_rows : (i + 1) * w.chunk_rows]
        enc = w.compress.encode(block.reshape(-1).view(np.uint8))
        index[i] = (at, len(enc))
        at += len(enc)
        parts.append(enc)
    idx = index.reshape((n_chunks,) + (1,) * (rows.ndim - 1) + (2,)).tobytes()
    parts.append(idx)
    parts.append(np.array([google_crc32c.value(idx)], dtype="<u4").tobytes())
    return b"".join(parts)


def plan_shard_writes(arr: Any, writer: ShardWriter | None, start: int, values: np.ndarray
                      ) -> list[tuple[str, np.ndarray]] | None:
    """(chunk key, rows) of each whole shard of ``arr`` that rows ``start:start+len(values)`` cover.

    None when the region is not a run of whole shards inside the array (e.g. the array's last,
    shorter shard), or ``values`` is not of the array's dtype: write that with zarr.
    """
    if writer is None or not writer.accepts(values) or values.shape[1:] != tuple(arr.shape[1:]):
        return None
    n = values.shape[0]
    s = writer.shard_rows
    if n == 0 or start % s or n % s or start + n > arr.shape[0]:
        return None
    key = arr.metadata.encode_chunk_key
    return [(key(((start // s) + k,) + (0,) * (values.ndim - 1)), values[k * s : (k + 1) * s]) for k in range(n // s)]


def write_region(arrays: Mapping[str, Any], start: int, data: Mapping[str, np.ndarray]) -> None:
    """Write rows ``start : start + len`` (axis 0) of the named zarr arrays, all arrays at once.

    arrays: a zarr group or a mapping of arrays by name; data: name -> values (strings: any
    objects, stored as ``str``). Whole stored objects of the layouts :func:`shard_writer` takes
    are encoded here, in the calling thread; the rest is written by zarr. All stores are issued
    together on zarr's event loop (one round trip). The caller guarantees no other task writes
    the stored objects the region touches.
    """
    items = []
    objects: list[tuple[Any, bytes]] = []  # (zarr StorePath, stored bytes) of whole objects encoded here
    for name, values in data.items():
        arr = arrays[name]
        if arr.dtype.kind in ("O", "T", "U"):
            values = np.asarray([str(v) for v in np.asarray(values).ravel()], dtype=object).reshape(np.shape(values))
        w = shard_writer(arr) if hasattr(arr, "_async_array") else None
        shards = plan_shard_writes(arr, w, start, values)
        if w is None or shards is None:
            items.append((arr, slice(start, start + len(values)), values))
            continue
        path = arr._async_array.store_path
        objects.extend((path / key, encode_shard(w, rows)) for key, rows in shards)
    if not objects and not all(hasattr(arr, "_async_array") for arr, _, _ in items):
        for arr, sel, values in items:  # another zarr layout: one write after another
            arr[sel] = values
        return
    import asyncio

    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buf = default_buffer_prototype().buffer

    async def _all() -> None:
        await asyncio.gather(*(arr._async_array.setitem(sel, values) for arr, sel, values in items),
                             *(p.set(buf.from_bytes(b)) for p, b in objects))

    sync(_all())
