"""Timing spans of ingest chunk tasks, taken inside a real Dask worker (``benchmarks/ingest.py --profile``).

Each span wraps one function of the chunk path on the worker (by module attribute, so the
pickled-by-reference task functions pick the wrapper up) and adds up, per span: calls, wall
seconds, process CPU seconds and minor page faults. Chunk tasks run one after another on one
worker thread, so the process CPU taken during a span is that span's (zarr's codec threads
included). Spans nest: "store write" holds the compression, "arm combination" holds the cleaning.
"""

from __future__ import annotations

import functools
import importlib
import resource
import time
from typing import Any

#: (label, module, attribute path) of every span, in the order printed.
SPANS: list[tuple[str, str, str]] = [
    ("chunk task (_run_one)", "skybatch.pipeline.jobcore", "_run_one"),
    ("  write_chunk", "skybatch.pipeline.ingest.chunk", "write_chunk"),
    ("    open piece (reader, identity)", "skybatch.pipeline.ingest.chunk", "_open_piece"),
    ("    file inspection (_plan: planning, misses)", "skybatch.sources.desi", "DesiCoaddReader._plan"),
    ("    per-spectrum columns", "skybatch.sources.desi", "DesiCoaddReader._meta"),
    ("    FITS image reads", "skybatch.sources._armsread", "read_rows_into"),
    ("      checksum sums", "skybatch.sources._armsread", "ones_sum"),
    ("      checksum of unread rows", "skybatch.sources._armsread", "sum_outside_rows"),
    ("    arm combination (byte swap)", "skybatch.sources._armsread", "combine_arms_into"),
    ("      NaN/inf cleaning", "skybatch.sources._arms", "clean_nonfinite"),
    ("    store write (compression)", "skybatch.pipeline.ingest.chunk", "write_rows"),
    ("  store chunk markers", "skybatch.pipeline.jobcore", "mark_store_chunk"),
    ("  manifest record", "skybatch.store.manifest", "Manifest.mark_chunk_done"),
]

_TOTALS: dict[str, list[float]] = {}
_ORIGINAL: dict[tuple[str, str], Any] = {}


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _wrap(label: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        w0, c0, f0 = time.perf_counter(), time.process_time(), _faults()
        try:
            return fn(*args, **kwargs)
        finally:
            t = _TOTALS.setdefault(label, [0, 0.0, 0.0, 0])
            t[0] += 1
            t[1] += time.perf_counter() - w0
            t[2] += time.process_time() - c0
            t[3] += _faults() - f0

    timed.__wrapped_span__ = fn  # type: ignore[attr-defined]
    return timed


def install() -> list[str]:
    """Wrap every span's function in this process (idempotent); returns the spans it found."""
    found = []
    for label, mod_name, path in SPANS:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        owner: Any = mod
        *parents, attr = path.split(".")
        for p in parents:
            owner = getattr(owner, p, None)
        fn = getattr(owner, attr, None) if owner is not None else None
        if fn is None:
            continue
        if (mod_name, path) not in _ORIGINAL:
            _ORIGINAL[(mod_name, path)] = fn
            setattr(owner, attr, _wrap(label, fn))
        found.append(label)
    _TOTALS.clear()
    return found


def collect() -> dict[str, list[float]]:
    """The totals of every span since :func:`install`: label -> [calls, wall s, CPU s, page faults]."""
    return {k: list(v) for k, v in _TOTALS.items()}


def print_spans(totals: dict[str, list[float]], n_tasks: int, n_spectra: int, driver: dict[str, float]) -> None:
    """Print the span table (per task and share of the chunk tasks' CPU) and the driver-side phases."""
    task = totals.get(SPANS[0][0], [0, 0.0, 0.0, 0])
    cpu_all = max(task[2], 1e-9)
    print(f"\nprofile: {n_tasks} chunk tasks, {n_spectra} spectra, one Dask worker process x one thread "
          "(spans on the worker; CPU = the worker process's, all threads)")
    print(f"{'span':38s}{'calls':>7s}{'wall ms/task':>13s}{'CPU ms/task':>12s}{'% CPU':>7s}{'faults/task':>12s}")
    for label, _, _ in SPANS:
        if label not in totals:
            continue
        calls, wall, cpu, faults = totals[label]
        print(f"{label:38s}{int(calls):7d}{wall / n_tasks * 1e3:13.1f}{cpu / n_tasks * 1e3:12.1f}"
              f"{cpu / cpu_all * 100:7.1f}{faults / n_tasks:12.0f}")
    wall_tasks = task[1]
    print("driver (wall s): " + ", ".join(f"{k} {v:.2f}" for k, v in driver.items())
          + f"; Dask/Prefect per-task overhead (chunk phase wall - task walls) / tasks: "
          f"{(driver.get('chunk tasks', 0.0) - wall_tasks) / max(n_tasks, 1) * 1e3:.1f} ms")
