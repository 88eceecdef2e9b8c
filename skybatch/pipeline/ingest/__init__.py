"""Ingest: survey FITS files (local or S3) into a chunked spectra store, on Dask.

The job is planned before it runs:

1. **list** the sources (paths, globs, directories, ``s3://`` URLs or prefixes);
2. **inspect** every new file on the cluster (headers and per-target tables
   only) to learn its science rows, grid and size; anything unusable is set
   aside in the manifest's quarantine with its reason;
3. **assign** rows: new sources are appended after the rows already planned, so
   earlier rows never move; the store is resized to the new total;
4. **write**: one Dask task per store chunk (one Zarr shard) reads exactly the
   source rows that fill it, straight from the FITS bytes into the chunk's buffers
   (checking the images' FITS checksums on the bytes read), writes every array
   once, then records the chunk in the manifest. No two tasks touch one stored
   object; a worker holds one chunk at a time.

Modules: :mod:`.config` (settings, plan types), :mod:`.plan`, :mod:`.chunk` (the
worker side), :mod:`.execute` (and the entry points), :mod:`.report`.

Re-running the same command skips every chunk already recorded with the same
plan fingerprint (and marked in the store itself, see
:mod:`skybatch.pipeline.jobcore`), so a run killed at any point (even ``kill -9``)
finishes on the next run with the same store an uninterrupted run gives. Adding
sources appends them (the last, partial chunk is rewritten with its new rows).

The job core holds the store's writer lock from planning to the end, refuses a
target that is not a skybatch spectra store, and trusts the manifest only if it
belongs to this store instance. A source that fails to decode while its chunk is
written is set aside; its rows stay in place with ``targetid`` -1, flux = ivar = 0
and mask bit :data:`SET_ASIDE_MASK_BIT`, the rest of the chunk is written, and the
next run tries that chunk again. Any other error fails the chunk (exit status 1).

Two doors: :func:`run` builds its own client from a cluster profile;
:func:`run_with_client` takes one. :func:`plan_ingest` and :func:`execute_plan`
are the coarse steps the Prefect flow wraps.
"""

from __future__ import annotations

from skybatch.pipeline.ingest.chunk import SET_ASIDE_MASK_BIT
from skybatch.pipeline.ingest.config import FORMATS, ChunkTask, IngestConfig, IngestPlan
from skybatch.pipeline.ingest.execute import execute_plan, ingest, run, run_with_client
from skybatch.pipeline.ingest.plan import chunk_tasks, plan_ingest
from skybatch.pipeline.ingest.report import IngestReport

__all__ = ["IngestConfig", "IngestPlan", "IngestReport", "ChunkTask", "plan_ingest", "execute_plan", "run",
           "run_with_client", "ingest", "chunk_tasks", "FORMATS", "SET_ASIDE_MASK_BIT"]
