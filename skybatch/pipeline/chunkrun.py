"""Run one Dask task per store chunk, with a progress bar, collecting failures.

Ingest, preprocess and map_model now go through :mod:`skybatch.pipeline.jobcore`
(identity, lock, in-store chunk markers, sorted failures); this older runner is
kept for the tile jobs, which record per-view chunks themselves. The job plans
its chunk tasks and their fingerprints, drops those its manifest already holds,
and hands the rest here. Failures never stop the other chunks; they come back
with the chunk index and the error so that a re-run can retry them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ChunkOutcome", "chunk_ranges", "keep_arrays_on_heap", "keep_heap_top", "run_chunk_tasks", "sum_timings"]

_HEAP_SET: list[bool] = []
_TOP_SET: dict[int, bool] = {}
#: glibc's M_MMAP_THRESHOLD (mallopt parameter -3) and the largest value it accepts on 64-bit Linux.
_M_MMAP_THRESHOLD, _HEAP_ARRAY_BYTES = -3, 32 * 2**20
#: glibc's M_TRIM_THRESHOLD (mallopt parameter -1)
_M_TRIM_THRESHOLD = -1


def sum_timings(records: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per step summed over the chunk tasks' records (each with an optional ``seconds`` mapping)."""
    total: dict[str, float] = {}
    for rec in records:
        for key, sec in (rec.get("seconds") or {}).items():
            total[key] = total.get(key, 0.0) + float(sec)
    return total


def keep_arrays_on_heap() -> bool:
    """Serve NumPy temporaries up to 32 MiB from the heap in this process (glibc; once per process).

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's
    mmap threshold at 128 KiB: every array temporary of a chunk task is then a fresh ``mmap`` whose
    pages fault in on first touch and go back to the OS on free. On a 1024 x 7781 chunk,
    ``preprocess_block`` takes ~13x the page faults and 1.6-3.8x the CPU time it takes in a plain
    process. Setting the mmap threshold explicitly restores the plain-process behaviour; the heap
    top is still trimmed as Dask asks. Returns True when the setting was applied (False elsewhere).
    """
    if _HEAP_SET:
        return _HEAP_SET[0]
    ok = False
    try:
        import ctypes
        import sys

        if sys.platform.startswith("linux"):
            ok = bool(ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, _HEAP_ARRAY_BYTES))
    except (OSError, AttributeError):
        ok = False
    _HEAP_SET.append(ok)
    return ok


def keep_heap_top(nbytes: int = 128 * 2**20) -> bool:
    """Let free memory up to ``nbytes`` stay at the top of the heap in this process (glibc; once per value).

    Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536``: every free that leaves more than 64 KiB at
    the top of the heap gives it back to the OS, and the next allocation faults it in again. XLA
    allocates and frees its temporaries on every call, so a model mapped on a worker took ~3x the
    page faults of the same calls in a plain process (25k against 8k per 2048-spectrum chunk of the
    map_model benchmark; 6k with this setting). Memory stays bounded: at most ``nbytes`` more is
    kept. For the jobs whose compute is many large calls (map_model). Returns True when applied.
    """
    if nbytes in _TOP_SET:
        return _TOP_SET[nbytes]
    ok = False
    try:
        import ctypes
        import sys

        if sys.platform.startswith("linux"):
            ok = bool(ctypes.CDLL("libc.so.6").mallopt(_M_TRIM_THRESHOLD, int(nbytes)))
    except (OSError, AttributeError):
        ok = False
    _TOP_SET[nbytes] = ok
    return ok


def chunk_ranges(n: int, chunk: int) -> list[tuple[int, int, int]]:
    """(index, start, stop) of every chunk of ``chunk`` rows over ``n`` rows."""
    return [(k, k * chunk, min((k + 1) * chunk, n)) for k in range(math.ceil(n / chunk))]


@dataclass
class ChunkOutcome:
    """Results of :func:`run_chunk_tasks`: records of finished chunks and failures."""

    records: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    rows_done: int


def run_chunk_tasks(
    client,
    tasks: Sequence[Any],
    fn: Callable[..., dict[str, Any]],
    *args: Any,
    key_prefix: str,
    rows: Callable[[Any], tuple[int, int]],
    index: Callable[[Any], int],
    progress: bool = True,
    total_rows: int | None = None,
    desc: str = "chunks",
    unit: str = "spectra",
    retries: int = 2,
    **kwargs: Any,
) -> ChunkOutcome:
    """Submit ``fn(task, *args, **kwargs)`` for every task and wait for all of them.

    rows(task) -> (start, stop) and index(task) -> chunk index describe a task;
    the bar counts rows (``unit``: spectra, tiles...) over ``total_rows`` (default: the tasks' rows).
    """
    from distributed import as_completed

    futures = {}
    for t in tasks:
        f = client.submit(fn, t, *args, key=f"{key_prefix}-{index(t)}", retries=retries, pure=False, **kwargs)
        futures[f] = t
    todo_rows = sum(b - a for a, b in map(rows, tasks))
    bar = None
    if progress and tasks:
        from tqdm.auto import tqdm

        total = total_rows if total_rows is not None else todo_rows
        bar = tqdm(total=total, initial=total - todo_rows, unit=unit, desc=desc, dynamic_ncols=True)
    records, failed, done_rows = [], [], 0
    for fut in as_completed(list(futures)):
        t = futures.pop(fut)
        a, b = rows(t)
        try:
            records.append(fut.result())
            done_rows += b - a
        except Exception as e:  # noqa: BLE001 - reported per chunk; the rest goes on
            failed.append({"chunk": index(t), "start": a, "stop": b, "error": f"{type(e).__name__}: {e}"})
        if bar is not None:
            bar.update(b - a)
        fut.release()
    if bar is not None:
        bar.close()
    return ChunkOutcome(records=records, failed=failed, rows_done=done_rows)
