"""The resumable-job core every store-writing job goes through.

A job (ingest, tile ingest, preprocess, map_model and the model jobs) supplies
only a *plan* (its chunk tasks, each with ``chunk``, ``start``, ``stop`` and a
``fingerprint`` of what the chunk will hold) and a *chunk function* that
computes and writes one chunk. :class:`StoreJob` does the rest, in one place:

1. **identity**: the target is checked (:func:`~skybatch.store.identity.check_target`);
   a foreign target is refused with a message naming what is there; a new store
   is created by the job with ``mode="w-"`` and given a uuid + kind; the manifest
   is trusted only if it records the same uuid (else its records are dropped).
2. **one writer**: an exclusive :class:`~skybatch.store.lock.StoreLock` is held
   from planning to the end (``wait_lock`` seconds of patience).
3. **checked chunk records**: after a chunk's data is written, the worker writes
   its fingerprint into the store itself (``_skybatch/chunks-<stage>``, one Zarr
   chunk per store chunk) and then the manifest record. A chunk counts as done
   only when both agree with the plan, so a deleted or replaced store, or a chunk
   last written by another run, is written again.
4. **failures sorted**: a chunk function sets aside bad input files itself
   (known decoding failures, :class:`~skybatch.sources.base.SourceError`) and
   returns them in its record; any other exception fails the chunk; its
   traceback is printed once per distinct error and the job's exit status is 1.

Exit statuses (:data:`EXIT_OK` ...) are the CLI's: 0 done, 1 chunks failed,
2 refused / bad usage (:class:`~skybatch.store.identity.JobRefused`), 3 done with
inputs set aside.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skybatch.store.identity import ForeignTargetError, JobRefused, check_target, read_manifest_identity
from skybatch.store.lock import StoreLock
from skybatch.store.manifest import Manifest

__all__ = [
    "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_SET_ASIDE", "exit_status",
    "Chunk", "JobOutcome", "StoreJob", "run_chunks", "mark_store_chunk", "store_markers", "reset_markers",
    "JobRefused", "default_wait_lock",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SET_ASIDE = 0, 1, 2, 3
_MARKER_GROUP = "_skybatch"


def exit_status(failed: Sequence[Any], set_aside: Sequence[Any] = ()) -> int:
    """1 if anything failed, else 3 if inputs were set aside, else 0."""
    return EXIT_FAILED if failed else (EXIT_SET_ASIDE if set_aside else EXIT_OK)


def default_wait_lock() -> float:
    """Seconds to wait for another writer's lock: ``$SKYBATCH_WAIT_LOCK`` (set by ``--wait-lock``), else 0."""
    try:
        return float(os.environ.get("SKYBATCH_WAIT_LOCK", "0") or 0)
    except ValueError:
        return 0.0


@dataclass
class Chunk:
    """One store chunk to compute: rows ``start:stop``; ``fingerprint`` (16 hex) identifies its content."""

    chunk: int
    start: int
    stop: int
    fingerprint: str


# -- per-chunk markers inside the store -------------------------------------------------------


def _marker_group(store: str, opts: dict[str, Any] | None, mode: str = "r+"):
    import zarr

    from skybatch.store.spectra_store import zarr_store

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # never through consolidated metadata: it may predate the marker group
        root = zarr.open_group(zarr_store(store, opts, read_only=(mode == "r")), mode=mode, use_consolidated=False)
        if _MARKER_GROUP in root:
            return root[_MARKER_GROUP]
        if mode == "r":
            return None
        return root.create_group(_MARKER_GROUP, attributes={
            "description": "skybatch bookkeeping: per-chunk fingerprints of the run that wrote each chunk"})


def _marker_name(stage: str) -> str:
    return "chunks-" + stage.replace("/", "_")


def reset_markers(store: str, opts: dict[str, Any] | None, stage: str, n_chunks: int, *, clear: bool = False) -> None:
    """Make the stage's marker array hold ``n_chunks`` entries (``clear``: forget every mark)."""
    g = _marker_group(store, opts)
    name = _marker_name(stage)
    if clear and name in g:
        del g[name]
    if name not in g:
        g.create_array(name, shape=(n_chunks,), chunks=(1,), dtype="uint64", fill_value=0,
                       dimension_names=["skybatch_chunk"])
    elif g[name].shape[0] != n_chunks:
        g[name].resize((n_chunks,))


_MARKER_ARRAYS: dict[tuple, Any] = {}
_MARKER_LOCK = threading.Lock()


def _marker_array(store: str, opts: dict[str, Any] | None, stage: str, chunk: int):
    """The stage's marker array, opened once per worker process (reopened when ``chunk`` is past its end).

    Its layout never changes (one uint64 per chunk, chunks of 1); a resize between runs only
    moves its end, so a kept handle writes the same objects a fresh one would.
    """
    import json

    key = (store, json.dumps(opts or {}, sort_keys=True, default=str), stage)
    with _MARKER_LOCK:
        arr = _MARKER_ARRAYS.get(key)
    if arr is None or chunk >= arr.shape[0]:
        arr = _marker_group(store, opts)[_marker_name(stage)]
        with _MARKER_LOCK:
            if len(_MARKER_ARRAYS) > 16:
                _MARKER_ARRAYS.clear()
            _MARKER_ARRAYS[key] = arr
    return arr


def mark_store_chunk(store: str, opts: dict[str, Any] | None, stage: str, chunk: int, fingerprint: str) -> None:
    """Record in the store that ``chunk`` now holds the content ``fingerprint`` (worker side; all zeros = none)."""
    value = int(fingerprint[:16], 16)
    arr = _marker_array(store, opts, stage, chunk)
    if value == 0:
        if chunk < arr.shape[0] and int(arr[chunk]) != 0:
            arr[chunk] = np.uint64(0)
        return
    arr[chunk] = np.uint64(value)


def store_markers(store: str, opts: dict[str, Any] | None, stage: str) -> np.ndarray:
    """The fingerprint (as uint64) of every chunk of the stage written so far (0 = none)."""
    g = _marker_group(store, opts, mode="r")
    if g is None or _marker_name(stage) not in g:
        return np.zeros(0, np.uint64)
    return np.asarray(g[_marker_name(stage)][:], np.uint64)


# -- running chunk tasks -----------------------------------------------------------------------


@dataclass
class JobOutcome:
    """What :func:`run_chunks` did: records of finished chunks, failures, inputs set aside."""

    records: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    set_aside: list[dict[str, Any]] = field(default_factory=list)
    rows_done: int = 0

    @property
    def exit_code(self) -> int:
        return exit_status(self.failed, self.set_aside)


def _run_one(task, fn, store, opts, stage, args, kwargs) -> dict[str, Any]:
    """Worker side: compute + write the chunk, then its store marker, then its manifest record.

    A record with ``set_aside`` entries is written to the store but not recorded as
    done, so the next run tries those files again.
    """
    mark_store_chunk(store, opts, stage, task.chunk, "0" * 16)  # "being rewritten" until the data is complete
    rec = fn(task, *args, **kwargs)
    rec.setdefault("chunk", task.chunk)
    rec.setdefault("fingerprint", task.fingerprint)
    if rec.get("set_aside"):
        return rec
    mark_store_chunk(store, opts, stage, task.chunk, task.fingerprint)
    Manifest(store, opts, stage=stage).mark_chunk_done({k: v for k, v in rec.items() if k != "set_aside"})
    return rec


def _error_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def run_chunks(
    client,
    tasks: Sequence[Any],
    fn: Callable[..., dict[str, Any]],
    *args: Any,
    store: str,
    storage_options: dict[str, Any] | None,
    stage: str,
    key_prefix: str,
    progress: bool = True,
    total_rows: int | None = None,
    desc: str = "chunks",
    unit: str = "spectra",
    retries: int = 2,
    local_threads: int = 2,
    **kwargs: Any,
) -> JobOutcome:
    """Run ``fn(task, *args, **kwargs)`` for every task (Dask ``client``, or in this process when None).

    Failures never stop the other chunks. The bar counts rows of finished chunks
    only and its label turns into ``FAILED n`` when chunks fail; the traceback of
    each distinct error is printed once on stderr.
    """
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import as_completed as local_completed

    out = JobOutcome()
    if not tasks:
        return out
    bar = None
    todo_rows = sum(t.stop - t.start for t in tasks)
    if progress:
        from tqdm.auto import tqdm

        total = total_rows if total_rows is not None else todo_rows
        bar = tqdm(total=total, initial=total - todo_rows, unit=unit, desc=desc, dynamic_ncols=True)
    shown: set[str] = set()

    def failed(t, e: BaseException, tb: str) -> None:
        line = _error_line(e)
        out.failed.append({"chunk": t.chunk, "start": t.start, "stop": t.stop, "error": line})
        if line not in shown:
            shown.add(line)
            print(f"\nchunk {t.chunk} (rows {t.start}:{t.stop}) of {desc} failed:\n{tb}", file=sys.stderr)
        if bar is not None:
            bar.set_description(f"{desc} FAILED {len(out.failed)}")

    def done(t, rec: dict[str, Any]) -> None:
        out.records.append(rec)
        out.set_aside.extend(rec.get("set_aside") or [])
        out.rows_done += t.stop - t.start
        if bar is not None:
            bar.update(t.stop - t.start)

    if client is None:
        with ThreadPoolExecutor(max_workers=max(1, local_threads)) as ex:
            futs = {ex.submit(_run_one, t, fn, store, storage_options, stage, args, kwargs): t for t in tasks}
            for fut in local_completed(futs):
                t = futs[fut]
                try:
                    done(t, fut.result())
                except Exception as e:  # noqa: BLE001 - reported per chunk; the rest goes on
                    failed(t, e, "".join(traceback.format_exception(e)))
    else:
        from distributed import as_completed

        futures = {}
        for t in tasks:
            f = client.submit(_run_one, t, fn, store, storage_options, stage, args, kwargs,
                              key=f"{key_prefix}-{t.chunk}", retries=retries, pure=False)
            futures[f] = t
        for fut in as_completed(list(futures)):
            t = futures.pop(fut)
            try:
                done(t, fut.result())
            except Exception as e:  # noqa: BLE001
                try:
                    tb = "".join(traceback.format_tb(fut.traceback())) + _error_line(e)
                except Exception:  # noqa: BLE001
                    tb = _error_line(e)
                failed(t, e, "Traceback (most recent call last):\n" + tb)
            fut.release()
    if bar is not None:
        bar.close()
    return out


# -- the job context ---------------------------------------------------------------------------

_MANIFEST_ENTRIES = {"identity.json", "sources.parquet", "tile_plan.parquet", "chunks", "stages", "quarantine"}


@dataclass
class StoreJob:
    """Identity, lock and trusted manifest of one store for one job stage (a context manager).

    store: the store URL; kind: ``spectra``, ``tiles``...; stage: the manifest stage
    (``ingest``, ``preprocess``, ``map-latent``...); job: a label for the lock.
    adopt_schema: accept a store with this ``skybatch_schema`` but no identity (older skybatch).
    wait_lock: seconds to wait for another writer (None: ``$SKYBATCH_WAIT_LOCK`` or 0).

    After ``__enter__``: ``identity`` is the store's identity (None if it does not exist
    yet, or its creation was interrupted before the final attrs write: create it, which
    completes an interrupted creation, then call :meth:`created`); ``manifest`` is trusted or reset.
    """

    store: str
    storage_options: dict[str, Any] | None
    kind: str
    stage: str
    job: str = ""
    adopt_schema: str | None = None
    wait_lock: float | None = None
    identity: dict[str, Any] | None = None
    manifest: Manifest | None = None
    lock: StoreLock | None = None
    notes: list[str] = field(default_factory=list)

    def __enter__(self) -> StoreJob:
        wait = None if self.wait_lock is None else float(self.wait_lock)
        self.lock = StoreLock(self.store, self.storage_options, job=self.job or self.stage, wait=wait).acquire()
        try:
            from skybatch.store.spectra_store import unfinished_creation

            pending = unfinished_creation(self.store, self.storage_options, self.kind)
            if pending is not None:  # killed before its final attrs write: the job's create completes it
                self._note(f"{self.store}: its creation was interrupted (no rows were written); completing it")
                self.identity = None
            else:
                self.identity = check_target(self.store, self.kind, self.storage_options,
                                             adopt_schema=self.adopt_schema)
            self.manifest = Manifest(self.store, self.storage_options, stage=self.stage)
            self._check_manifest()
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.lock is not None:
            self.lock.release()

    def _note(self, msg: str) -> None:
        self.notes.append(msg)
        print(f"note: {msg}", file=sys.stderr)

    def open_manifest(self) -> Manifest:
        """The store's manifest (opened by ``__enter__``); RuntimeError outside the ``with`` block."""
        if self.manifest is None:
            raise RuntimeError(f"{self.store}: StoreJob used outside its `with StoreJob(...)` block (no manifest open)")
        return self.manifest

    def _check_manifest(self) -> None:
        m = self.open_manifest()
        fs = m.fs
        if not fs.exists(m.url):
            if self.identity is not None:
                m.write_identity(self.identity)
            return
        names = {str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(m.url, detail=False)}
        if names - _MANIFEST_ENTRIES:
            raise ForeignTargetError(
                f"{m.url} (where this store's manifest goes) holds files skybatch did not write "
                f"({sorted(names - _MANIFEST_ENTRIES)[:5]}); move them away or choose another store path"
            )
        mid = read_manifest_identity(fs, m.url)
        if self.identity is None:
            if names:
                self._note(f"{self.store} does not exist but {m.url} does: its records describe a store that is gone; "
                           "they are not trusted and will be replaced")
                m.reset()
            return
        if mid is None or mid.get("uuid") != self.identity["uuid"]:
            self._note(f"the records in {m.url} belong to another store instance "
                       f"({(mid or {}).get('uuid', 'none')} vs {self.identity['uuid']}); every chunk is checked again")
            m.reset(keep_sources=(mid is None))
            m.write_identity(self.identity)

    def created(self, identity: dict[str, Any]) -> None:
        """Tell the job the store was just created with ``identity`` (records it in the manifest)."""
        self.identity = identity
        self.open_manifest().write_identity(identity)

    def todo(self, tasks: Sequence[Any], n_chunks: int | None = None) -> list[Any]:
        """The tasks not yet done: a manifest record with the same fingerprint AND the store's marker agree."""
        done = self.open_manifest().done_chunks()
        marks = store_markers(self.store, self.storage_options, self.stage)
        if n_chunks is not None:
            reset_markers(self.store, self.storage_options, self.stage, n_chunks)
        out = []
        for t in tasks:
            ok = t.fingerprint in done.get(t.chunk, set()) and t.chunk < marks.shape[0] \
                and int(marks[t.chunk]) == int(t.fingerprint[:16], 16)
            if not ok:
                out.append(t)
        return out
