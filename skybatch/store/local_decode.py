"""Decode whole stored objects of a local Blosc-compressed Zarr v3 array straight into a caller's buffer.

Zarr's own read of one 2048 x 7781 float32 shard (16 inner chunks of 128 rows) reads the shard into a
new buffer, decodes every inner chunk into another new 4 MB buffer and copies that into the output:
~64 MB of fresh pages (faulted in and zeroed) and two copies per 64 MB read. On two cores the model
jobs pay for that in compute. For the common case (a local store; pixel arrays whose codecs are
``bytes`` + Blosc, sharded or not) :class:`LocalBloscReader` reads each inner chunk's compressed
bytes into a small reused buffer and calls Blosc's decompressor with the caller's buffer as
destination: no allocation, and no copy of decompressed data. The bytes decoded are the ones Zarr would
decode (same objects, same codec), so the values are identical; the shard index's CRC32C is checked
as Zarr checks it. Anything else (remote stores, other codecs, reads not on object boundaries)
returns ``None`` from :func:`local_blosc_reader` and the caller uses Zarr.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from skybatch.store.axis0_layout import EMPTY_CHUNK, axis0_layout

__all__ = ["LocalBloscReader", "local_blosc_reader"]

@dataclass(frozen=True)
class LocalBloscReader:
    """Reads rows of a local 2-D+ Zarr v3 array stored as ``bytes`` + Blosc (optionally sharded on axis 0).

    root: the array's directory; key: ``(row object index) -> chunk key`` of the object holding those
    rows; object_rows: rows per stored object (shard, or chunk when unsharded); inner_rows: rows per
    compressed chunk (== object_rows when unsharded); n_rows: the array's rows; index_at_end: where a
    shard's index sits; fill: the array's fill value; dtype: its (little-endian) dtype.
    """

    root: str
    key: Any
    object_rows: int
    inner_rows: int
    n_rows: int
    sharded: bool
    index_at_end: bool
    fill: Any
    dtype: np.dtype
    row_shape: tuple[int, ...]

    def can_read(self, start: int, stop: int, out: np.ndarray) -> bool:
        """True when rows ``start:stop`` cover whole objects (the last may end at the array's end) and
        ``out`` is a C-contiguous array of this dtype and row shape."""
        return (start % self.object_rows == 0 and (stop % self.object_rows == 0 or stop == self.n_rows)
                and 0 <= start <= stop <= self.n_rows and out.dtype == self.dtype and out.flags.c_contiguous
                and tuple(out.shape[1:]) == self.row_shape and out.shape[0] == stop - start)

    def read(self, start: int, stop: int, out: np.ndarray) -> None:
        """``out[:] = array[start:stop]`` for rows on object boundaries (see :meth:`can_read`)."""
        if not self.can_read(start, stop, out):
            raise ValueError(f"rows {start}:{stop} into {out.dtype}{out.shape} are not whole stored objects")
        for obj in range(start // self.object_rows, -(-stop // self.object_rows)):
            a = obj * self.object_rows
            b = min(a + self.object_rows, stop)
            self._read_object(obj, out[a - start : b - start])

    def _read_object(self, obj: int, out: np.ndarray) -> None:
        path = os.path.join(self.root, self.key(obj))
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            out[...] = self.fill
            return
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                out[...] = self.fill
            elif self.sharded:
                self._decode_shard(fd, size, out)
            else:
                _decode_into(_pread(fd, 0, size), out, self.inner_rows)
        finally:
            os.close(fd)

    def _decode_shard(self, fd: int, size: int, out: np.ndarray) -> None:
        import google_crc32c

        n_inner = self.object_rows // self.inner_rows
        nbytes = 16 * n_inner
        if size < nbytes + 4:
            raise ValueError(f"{self.root}: a shard of {size} bytes cannot hold its index (corrupt object)")
        raw = os.pread(fd, nbytes + 4, size - nbytes - 4 if self.index_at_end else 0)
        if google_crc32c.value(raw[:nbytes]) != int.from_bytes(raw[nbytes:], "little"):
            raise ValueError(f"{self.root}: shard index checksum mismatch (corrupt object)")
        index = np.frombuffer(raw, "<u8", count=2 * n_inner).reshape(n_inner, 2)
        rows = len(out)
        for i in range(-(-rows // self.inner_rows)):
            part = out[i * self.inner_rows : min((i + 1) * self.inner_rows, rows)]
            off, length = index[i]
            if off == EMPTY_CHUNK:
                part[...] = self.fill
            else:
                _decode_into(_pread(fd, int(off), int(length)), part, self.inner_rows)


_SCRATCH = threading.local()


def _pread(fd: int, offset: int, length: int) -> memoryview:
    """``length`` bytes of ``fd`` at ``offset`` in this thread's reused scratch buffer (valid until its next call).

    One inner chunk (a few MB) at a time, so the compressed bytes are still in cache when decoded; a plain
    read rather than a memory map, so a file truncated by another program is an error, not a SIGBUS.
    """
    buf: bytearray | None = getattr(_SCRATCH, "buf", None)
    if buf is None or len(buf) < length:
        buf = _SCRATCH.buf = bytearray(max(length, 1 << 20))
    view = memoryview(buf)[:length]
    got = os.preadv(fd, [view], offset)
    if got != length:
        raise ValueError(f"short read: {got} of {length} bytes at {offset} (truncated object)")
    return view


def _decode_into(src: memoryview, out: np.ndarray, chunk_rows: int) -> None:
    """Blosc-decompress one stored chunk of ``chunk_rows`` rows into ``out`` (its first ``len(out)`` rows)."""
    from numcodecs import blosc

    if len(out) == chunk_rows:
        blosc.decompress(src, out)
        return
    # a chunk that runs past the array's end: decode it whole, keep the rows that exist
    full = np.empty((chunk_rows,) + out.shape[1:], out.dtype)
    blosc.decompress(src, full)
    out[...] = full[: len(out)]


def local_blosc_reader(arr: Any) -> LocalBloscReader | None:
    """A :class:`LocalBloscReader` for the Zarr array ``arr``, or None when its layout is not one it reads.

    Reads: Zarr v3 arrays in a ``LocalStore``, split along axis 0 only, codecs ``bytes`` (little
    endian) + ``blosc``, or one ``sharding_indexed`` codec holding exactly those (index codecs
    ``bytes`` little endian + ``crc32c``) with inner chunks that split axis 0 only
    (:func:`~skybatch.store.axis0_layout.axis0_layout`).
    """
    import zarr
    from zarr.codecs import BloscCodec

    layout = axis0_layout(arr)
    if (layout is None or layout.strings or not isinstance(layout.compressor, BloscCodec)
            or not isinstance(arr.store, zarr.storage.LocalStore)):
        return None
    dtype = np.dtype(arr.dtype)
    if dtype.byteorder == ">":
        return None
    meta: Any = arr.metadata
    shape = tuple(int(s) for s in arr.shape)
    rest = (0,) * (len(shape) - 1)
    root = str(arr.store.root / arr.path) if arr.path else str(arr.store.root)
    return LocalBloscReader(
        root=root, key=lambda k: meta.encode_chunk_key((k, *rest)), object_rows=layout.object_rows,
        inner_rows=layout.inner_rows, n_rows=shape[0], sharded=layout.sharded, index_at_end=layout.index_at_end,
        fill=meta.fill_value, dtype=dtype.newbyteorder("="), row_shape=shape[1:],
    )
