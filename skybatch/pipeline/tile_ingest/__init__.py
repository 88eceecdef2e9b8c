"""Tile ingest: ``.npz`` and FITS image tiles (local or S3) into a tile store, on Dask.

Planned before it runs, like spectra ingest (:mod:`skybatch.pipeline.ingest`):

1. **list** the sources (paths, globs, directories, ``s3://`` URLs or prefixes; directories
   are searched for ``*.npz`` and ``*.fits`` / ``*.fit`` / ``*.fits.fz``);
2. **inspect** every new file on the cluster (headers only: FITS headers by ranged reads, the
   ``.npy`` headers and small metadata arrays inside an ``.npz``) to learn its planes: tile
   id, instrument, band, shape. Unusable files are set aside in the manifest's quarantine with
   a reason; so are files repeating a (tile, instrument, band) already planned (``duplicate``)
   and bands a view has no slot for (``band-mismatch``);
3. **assign**: every plane goes to a *view* (instrument + pixel grid,
   :func:`skybatch.store.tile_store.assign_views`); new tile ids get the next indices of the
   one tile axis shared by all views (sorted by tile id within a run; earlier tiles never
   move); the store is resized;
4. **write**: one Dask task per (view, chunk of ``chunk_tiles`` tiles) reads the planes of
   that chunk and writes the whole chunk (or shard), then records it in the manifest
   (``URL.manifest/stages/tiles-<view>/``). Chunks without any plane are never written (they
   read as not present).

The plan itself is one Parquet file, ``URL.manifest/tile_plan.parquet`` (one row per planned
plane, plus one row per source whose planes are all absent), written atomically after the
store is resized. Re-running the same command skips every chunk recorded with the same plan
fingerprint (the fingerprint includes the store's ``store_uuid``, so a deleted and re-created
store is written again); a run killed at any point finishes on the next run. New sources
append tiles, or add bands to existing tiles (their chunks are rewritten from the sources).

Two doors: :func:`run` builds its own client; :func:`run_with_client` takes one;
:func:`ingest_tiles` is the one-call form. :func:`plan_tile_ingest` and :func:`execute_tile_plan`
are the coarse steps the Prefect flow wraps.
"""

from __future__ import annotations

from .config import TileIngestConfig
from .execute import execute_tile_plan, ingest_tiles, run, run_with_client
from .plan import TileChunkTask, TileIngestPlan, plan_tile_ingest
from .report import TileIngestReport
from .sources import expand_tile_sources
from .table import PLAN_FILE

__all__ = [
    "TileIngestConfig",
    "TileIngestPlan",
    "TileIngestReport",
    "TileChunkTask",
    "expand_tile_sources",
    "plan_tile_ingest",
    "execute_tile_plan",
    "run",
    "run_with_client",
    "ingest_tiles",
    "PLAN_FILE",
]
