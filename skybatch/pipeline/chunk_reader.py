"""Read whole store chunks of a few variables into reused contiguous buffers.

A spectra store is written in objects of ``chunk_spectra`` rows: one Zarr chunk per object in an
unsharded store, one shard (holding several inner chunks of ~4 MiB) in a sharded one. Reading a
whole object with ``arr[start:stop]`` costs one request and one decode per inner chunk; reading
rows piecemeal costs a request per inner chunk touched, and fancy indexing through Zarr decodes
whole chunks for a few rows. So the model feeders read whole objects and select rows in memory.

:class:`ChunkReader` opens the store once and reads rows ``start:stop`` of each variable into a
buffer the caller owns (:meth:`ChunkReader.new_buffers`), through Zarr's ``out=`` so no array is
allocated per read. Float variables are handed out as float32 (a float32 variable is read
straight into its buffer; another float dtype is read then cast). Buffers are 64-byte aligned
(:mod:`skybatch.pipeline.hostbuf`), so JAX on CPU uses batches sliced from them in place. Whole
objects of a local Blosc-compressed array (the store's flux and ivar) are decompressed straight into
the buffer (:mod:`skybatch.store.local_decode`: ~10x less CPU than Zarr's read, which allocates and
copies each inner chunk); everything else goes through Zarr.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skybatch.pipeline.hostbuf import aligned_empty
from skybatch.store.local_decode import local_blosc_reader
from skybatch.store.spectra_store import open_group

__all__ = ["ChunkReader", "chunk_rows", "object_rows"]


def object_rows(arr: Any) -> int:
    """Rows of one stored object of a Zarr array: the shard's rows if sharded, else the chunk's."""
    shards = getattr(arr, "shards", None)
    return int(shards[0] if shards else arr.chunks[0])


def chunk_rows(group: Any, variable: str = "flux") -> int:
    """Rows per store chunk: the store's ``chunk_spectra`` attribute, else ``variable``'s object rows."""
    return int(group.attrs.get("chunk_spectra", object_rows(group[variable])))


def _out_dtype(dtype: np.dtype, float32: bool) -> np.dtype:
    return np.dtype(np.float32) if float32 and dtype.kind == "f" else np.dtype(dtype)


class ChunkReader:
    """Reader of rows ``start:stop`` of ``variables`` of one store, into caller-owned buffers.

    store / storage_options: the Zarr store (path or URL). variables: names of arrays whose first
    axis is the spectrum (or any row) axis. float32: hand out float variables as float32.
    Numeric variables go through reusable buffers; string variables come back as new arrays.

    Thread safety: :meth:`read` may be called from several threads at once, each with its own
    buffers.
    """

    def __init__(self, store: str, storage_options: dict[str, Any] | None, variables: tuple[str, ...] | list[str],
                 *, float32: bool = True):
        if not variables:
            raise ValueError("ChunkReader: give at least one variable to read")
        self.store = store
        g = open_group(store, storage_options, mode="r")
        missing = [v for v in variables if v not in g]
        if missing:
            raise KeyError(f"{store}: variable(s) {missing} are not in the store; it has {sorted(g.array_keys())}")
        self.variables = tuple(variables)
        self._arrays = {v: g[v] for v in self.variables}
        first = self._arrays[self.variables[0]]
        self.n_rows = int(first.shape[0])
        for v, a in self._arrays.items():
            if int(a.shape[0]) != self.n_rows:
                raise ValueError(f"{store}: {v!r} has {a.shape[0]} rows but {self.variables[0]!r} has {self.n_rows}")
        self.chunk_rows = chunk_rows(g, "flux" if "flux" in g else self.variables[0])
        self.dtypes = {v: _out_dtype(np.dtype(a.dtype), float32) for v, a in self._arrays.items()}
        self.row_shapes = {v: tuple(int(s) for s in a.shape[1:]) for v, a in self._arrays.items()}
        self._numeric = tuple(v for v in self.variables if self.dtypes[v].kind in "biuf")
        # local Blosc pixel arrays: whole objects decoded straight into the buffers (store.local_decode)
        self._direct = {v: local_blosc_reader(a) for v, a in self._arrays.items() if v in self._numeric}

    def chunk_bounds(self, start: int) -> tuple[int, int]:
        """(start, stop) of the store chunk holding row ``start``."""
        a = (start // self.chunk_rows) * self.chunk_rows
        return a, min(a + self.chunk_rows, self.n_rows)

    def new_buffers(self) -> dict[str, np.ndarray]:
        """One empty 64-byte aligned buffer of ``chunk_rows`` rows per numeric variable (reuse it for many reads)."""
        return {v: aligned_empty((self.chunk_rows,) + self.row_shapes[v], self.dtypes[v]) for v in self._numeric}

    def read(self, start: int, stop: int, out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Rows ``start:stop`` of every variable: views into ``out`` (numeric ones) or new arrays.

        ``out``: buffers from :meth:`new_buffers` (None: new ones, sized to the rows read). A read
        that spans whole stored objects (a whole shard) is one Zarr call per variable.
        """
        if not 0 <= start <= stop <= self.n_rows:
            raise ValueError(f"{self.store}: rows {start}:{stop} are outside 0:{self.n_rows}")
        m = stop - start
        if out is not None and any(len(out[v]) < m for v in self._numeric):
            raise ValueError(f"ChunkReader.read: {m} rows do not fit buffers of {self.chunk_rows} rows")
        res: dict[str, np.ndarray] = {}
        for v in self.variables:
            arr = self._arrays[v]
            if v not in self._numeric:
                res[v] = np.asarray(arr[start:stop])
                continue
            buf = out[v][:m] if out is not None else aligned_empty((m,) + self.row_shapes[v], self.dtypes[v])
            direct = self._direct.get(v)
            if direct is not None and direct.can_read(start, stop, buf):
                direct.read(start, stop, buf)
            else:
                _read_into(arr, start, stop, buf)
            res[v] = buf
        return res


def _read_into(arr: Any, start: int, stop: int, buf: np.ndarray) -> None:
    """``buf[:] = arr[start:stop]`` without an intermediate array when the dtypes agree."""
    if np.dtype(arr.dtype) == buf.dtype and buf.flags.c_contiguous:
        from zarr.core.buffer import default_buffer_prototype

        nd = default_buffer_prototype().nd_buffer.from_numpy_array(buf)
        arr.get_basic_selection(slice(start, stop), out=nd)
    else:
        buf[...] = np.asarray(arr[start:stop])
