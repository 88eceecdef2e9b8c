"""Worker side of ingest: read the pieces of one store chunk and write the whole chunk (pickled by reference)."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from skybatch.pipeline.chunkrun import keep_arrays_on_heap, keep_heap_top
from skybatch.pipeline.ingest.config import ChunkTask
from skybatch.pipeline.ingest_checks import _reader_for
from skybatch.sources.base import SourceError, SpectraBlock
from skybatch.store.fsutil import filesystem
from skybatch.store.spectra_store import open_group, write_rows

__all__ = ["SET_ASIDE_MASK_BIT", "write_chunk"]

#: Mask bit set on every pixel of a row whose source file was set aside while its chunk was written.
SET_ASIDE_MASK_BIT = 31


def _empty_columns(columns: dict[str, str], n: int) -> dict[str, np.ndarray]:
    from skybatch.store.spectra_store import _fill

    return {k: np.full(n, _fill(t), dtype=object if t in ("object", "str") else t) for k, t in columns.items()}


_BUFFERS = threading.local()


def _chunk_buffers(n: int, nwave: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This thread's flux (float32), ivar (float32) and mask (uint32) buffers of shape (n, nwave).

    Reused from one chunk task to the next on a worker thread: fresh 8 MB arrays per task cost
    page faults (~10 % of a task). Contents are stale: callers write every row.
    """
    b = getattr(_BUFFERS, "arrays", None)
    if b is None or b[0].shape != (n, nwave):
        b = (np.empty((n, nwave), np.float32), np.empty((n, nwave), np.float32), np.empty((n, nwave), np.uint32))
        _BUFFERS.arrays = b
    return b


_ARRAYS: dict[tuple, dict[str, Any]] = {}
_ARRAYS_LOCK = threading.Lock()


def _whole_chunk_writer(arr: Any) -> Any:
    """``arr`` set to write every chunk it is given, without first testing it for all-fill values.

    Zarr's default (``write_empty_chunks=False``) compares each inner chunk with the fill value
    before encoding it (~3 ms per 4 MB chunk: ~15 % of a chunk task's CPU). An ingest chunk is
    hardly ever all fill, and writing one that is reads back the same values.
    """
    try:
        return arr.with_config({"write_empty_chunks": True})
    except (AttributeError, TypeError):  # another zarr: keep its default
        return arr


def _store_arrays(store: str, options: dict[str, Any], run_id: str, names: list[str]) -> dict[str, Any]:
    """The store's arrays ``names``, opened once per run per worker process.

    Opening the group and 20 arrays costs ~20 metadata reads per task; within one run the
    store's shape and arrays do not change (the plan resized it before any chunk task), so
    they are kept, keyed by store and run id (a new run opens them again).
    """
    key = (store, run_id)
    with _ARRAYS_LOCK:
        got = _ARRAYS.get(key)
        if got is None or any(n not in got for n in names):
            g = open_group(store, options)
            got = {n: _whole_chunk_writer(g[n]) for n in names}
            _ARRAYS.clear()
            _ARRAYS[key] = got
        return got


def _open_piece(task: ChunkTask, url: str, source_options, keep_nonscience, verify_checksums: bool):
    """(reader, fs, SourceInfo) of one source of the chunk, checked against what was planned."""
    if task.source_rows is None:
        raise RuntimeError(f"chunk {task.chunk}: submitted before execute_plan filled its source_rows")
    src = task.source_rows[url]
    fs = filesystem(url, source_options)
    reader = _reader_for(fs, url, src["format"], verify_checksums)
    info = src.get("info")
    if info is None:  # planned by an earlier run: read the headers again (read() checks identity)
        info = reader.inspect(fs, url, keep_nonscience=keep_nonscience)
    if info.n_rows != src["n_rows"] or not np.array_equal(np.asarray(info.rows), np.asarray(src["rows"])):
        raise SourceError(
            url, "changed",
            f"changed since it was planned ({src['n_rows']} rows then, {info.n_rows} now); "
            "restore the original file, or ingest the new version into a new store",
        )
    return reader, fs, info


def _read_piece_into(task: ChunkTask, url: str, a: int, b: int, source_options, keep_nonscience: bool,
                     verify_checksums: bool, flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray
                     ) -> tuple[dict[str, np.ndarray], int]:
    """Fill the piece's rows of the chunk buffers; (per-spectrum columns, NaN/inf pixels cleaned)."""
    reader, fs, info = _open_piece(task, url, source_options, keep_nonscience, verify_checksums)
    if hasattr(reader, "read_into"):  # straight into the chunk's rows (no per-piece arrays)
        meta, n_bad = reader.read_into(fs, info, a, b, flux, ivar, mask)
        return meta, int(n_bad)
    block: SpectraBlock = reader.read(fs, info, a, b)
    if len(block) != b - a:
        raise SourceError(url, "row-mismatch", f"reader returned {len(block)} rows for rows {a}:{b}")
    flux[:], ivar[:], mask[:] = block.flux, block.ivar, block.mask
    return block.meta, int(block.n_bad_pixels)


def write_chunk(
    task: ChunkTask,
    store: str,
    store_options: dict[str, Any],
    source_options: dict[str, Any],
    keep_nonscience: bool,
    columns: dict[str, str],
    nwave: int,
    run_id: str,
    verify_checksums: bool = True,
) -> dict[str, Any]:
    """Read the pieces of one chunk into one set of chunk buffers and write the whole chunk.

    One write per array (the job core then records the chunk). A piece whose file fails to
    decode (SourceError, e.g. a DATASUM mismatch found while reading) is set aside: its rows
    keep targetid -1, flux = ivar = 0 and mask bit SET_ASIDE_MASK_BIT; the other pieces are written.
    verify_checksums: check the FITS checksums of the images read (readers that do it in the read).
    """
    keep_arrays_on_heap()  # Dask's nanny environment would make every read and codec buffer a fresh mmap
    keep_heap_top()  # and trim the freed compressed shards (~12 MB per task) only to fault them in again
    n = task.stop - task.start
    flux, ivar, mask = _chunk_buffers(n, nwave)  # every row is written below (pieces cover the chunk)
    meta = _empty_columns(columns, n)
    n_bad = 0
    at = 0
    set_aside: list[dict[str, Any]] = []
    for url, a, b in task.pieces:
        m = b - a
        rows = slice(at, at + m)
        try:
            got, bad = _read_piece_into(task, url, a, b, source_options, keep_nonscience, verify_checksums,
                                        flux[rows], ivar[rows], mask[rows])
            if any(len(v) != m for v in got.values()):
                raise SourceError(url, "row-mismatch", f"reader returned columns of the wrong length for rows {a}:{b}")
        except SourceError as e:
            set_aside.append({"url": url, "reason": e.reason, "message": str(e)})
            flux[rows] = 0.0
            ivar[rows] = 0.0
            mask[rows] = np.uint32(1 << SET_ASIDE_MASK_BIT)
            if "source" in meta:
                meta["source"][rows] = url
            at += m
            continue
        for k in columns:
            if k == "source":
                meta[k][rows] = url
            elif k in got:
                meta[k][rows] = got[k]
        n_bad += bad
        at += m
    if at != n:  # pieces always cover the chunk; never write stale rows of a reused buffer
        raise RuntimeError(f"chunk {task.chunk}: its pieces cover {at} of {n} rows (a planning bug)")
    data = {"flux": flux, "ivar": ivar, "mask": mask, **meta}
    write_rows(_store_arrays(store, store_options, run_id, list(data)), task.start, data)
    return {
        "chunk": task.chunk,
        "start": task.start,
        "stop": task.stop,
        "fingerprint": task.fingerprint,
        "n_bad_pixels": n_bad,
        "sources": [p[0] for p in task.pieces],
        "run_id": run_id,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "set_aside": set_aside,
    }
