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

import hashlib
import io
import json
import math
import re
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import skybatch
from skybatch.pipeline.chunkrun import run_chunk_tasks
from skybatch.pipeline.jobcore import StoreJob
from skybatch.sources.base import SourceError
from skybatch.sources.tiles import TILE_SUFFIXES, TilePlaneInfo, TileSourceInfo, inspect_tile_source, read_tile_planes
from skybatch.store.fsutil import StorageSettings, expand_sources, atomic_write_bytes, filesystem, join, public_options
from skybatch.store.identity import IDENTITY_ATTR, JobRefused
from skybatch.store.manifest import Manifest, chunk_fingerprint
from skybatch.store.tile_store import (
    ViewSpec,
    assign_views,
    consolidate,
    create_tile_store,
    ensure_view,
    open_tile_group,
    resize_tiles,
    tile_store_exists,
    write_tile_chunk,
    write_tile_ids,
)

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

#: The plan table inside the manifest folder.
PLAN_FILE = "tile_plan.parquet"
_TRANSIENT = (ConnectionError, TimeoutError)
_PLAN_COLUMNS = {
    "url": object, "format": object, "size": "int64", "checksum": object, "run_id": object, "planned_at": object,
    "tile_id": object, "tile_index": "int64", "view": object, "band": object, "band_index": "int64",
    "instrument": object, "locator": object, "height": "int64", "width": "int64", "unit": object,
    "read_instrument": object, "read_tile_pattern": object,
}  # fmt: skip


@dataclass
class TileIngestConfig(StorageSettings):
    """Settings of one tile ingest run (CLI flags, YAML keys and flow parameters map onto these).

    sources: local paths, globs, directories, ``s3://`` URLs or prefixes of ``.npz`` / FITS tiles.
    store: where the Zarr tile store goes: a local path or an ``s3://`` URL.
    chunk_tiles: tiles per write unit (Zarr chunk or shard, and per Dask task). A task holds
        chunk_tiles x bands x H x W x 9 bytes (image, noise, mask) in memory: 4 tiles of 6 x
        4096^2 px take 3.6 GB, so use 1 for such tiles.
    instrument: force the instrument of every source (``rubin``, ``euclid``, ...); default: infer
        it per file (see :mod:`skybatch.sources.tiles`).
    tile_pattern: a regular expression with a named group ``tile`` that takes the tile id from
        each file's URL, e.g. ``r"/(?P<tile>tile_\\d+)[_.]"``; default: from the file's keys or name.
    shard_planes: store each (tile, band) plane as its own inner chunk inside shards of
        chunk_tiles tiles; ``None`` = when a plane is at least 4 MiB (1024^2 float32). Fixed
        per view when the view is created.
    cluster: a cluster profile name, a YAML path, or a scheduler address.
    endpoint_url: an S3-compatible endpoint for sources and store (default AWS / $AWS_ENDPOINT_URL).
    anon: anonymous S3 access; ``None`` = anonymous when no credentials are configured.
    source_options / store_options: extra fsspec options for sources / store.
    retries: attempts for a chunk task that fails on a transient error.
    progress: show a progress bar on the terminal.
    """

    sources: list[str]
    store: str
    chunk_tiles: int = 4
    instrument: str | None = None
    tile_pattern: str | None = None
    shard_planes: bool | None = None
    cluster: str = "auto"
    endpoint_url: str | None = None
    anon: bool | None = None
    source_options: dict[str, Any] = field(default_factory=dict)
    store_options: dict[str, Any] = field(default_factory=dict)
    retries: int = 3
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.sources, str):
            self.sources = [self.sources]
        if not self.sources:
            raise ValueError("sources: give at least one path, glob or s3:// URL of tiles (--source)")
        if not self.store:
            raise ValueError("store: give a local path or s3:// URL for the Zarr tile store (--store)")
        if isinstance(self.chunk_tiles, bool) or not isinstance(self.chunk_tiles, int) or self.chunk_tiles < 1:
            raise ValueError(f"chunk_tiles: must be a positive integer, got {self.chunk_tiles!r} (--chunk-tiles)")
        if self.instrument is not None and not str(self.instrument).strip():
            raise ValueError("instrument: give a name such as 'rubin' or 'euclid', or leave it unset (--instrument)")
        if self.tile_pattern:
            try:
                pat = re.compile(self.tile_pattern)
            except re.error as e:
                raise ValueError(f"tile_pattern: {self.tile_pattern!r} is not a regular expression ({e}) "
                                 "(--tile-pattern)") from None
            if "tile" not in pat.groupindex:
                raise ValueError(f"tile_pattern: {self.tile_pattern!r} needs a named group (?P<tile>...) "
                                 "(--tile-pattern)")
        if self.retries < 0:
            raise ValueError("retries: must be >= 0")


    def public_dict(self) -> dict[str, Any]:
        """The settings as recorded in store attrs (no credentials)."""
        d = asdict(self)
        d["source_options"] = public_options(self.source_options)
        d["store_options"] = public_options(self.store_options)
        d.pop("progress", None)
        return d


@dataclass
class TileChunkTask:
    """One (view, chunk) to write: tiles ``start:stop`` of view ``view``.

    pieces: (url, tile index, band index, tile id, band, locator) in store order.
    seq: a run-unique task number (Dask key). fingerprint: hash of the chunk's plan.
    planes: url -> the TilePlaneInfo of each piece from that url, filled before submission.
    read_options: url -> (instrument, tile_pattern) settings the url was planned with.
    """

    seq: int
    view: str
    chunk: int
    start: int
    stop: int
    pieces: list[tuple[str, int, int, str, str, str]]
    fingerprint: str
    planes: dict[str, list[TilePlaneInfo]] | None = None
    read_options: dict[str, tuple[str | None, str | None]] | None = None


@dataclass
class TileIngestPlan:
    """What :func:`execute_tile_plan` will do; built by :func:`plan_tile_ingest`."""

    config: TileIngestConfig
    run_id: str
    views: dict[str, ViewSpec]
    n_tiles: int
    table: pd.DataFrame
    todo: list[TileChunkTask]
    n_chunks: int
    new_sources: list[str]
    set_aside: list[dict[str, Any]]
    n_absent: int = 0


@dataclass
class TileIngestReport:
    """The outcome of a tile ingest run.

    n_tiles: tiles in the store after the run. views: planes planned per view.
    planes_written: planes written by this run.
    chunks_written / chunks_skipped / chunks_total: per (view, chunk) counts.
    failed_chunks: chunks that failed after retries, with the error (re-run to retry).
    set_aside: sources set aside (url, reason, message): fix them and re-run.
    n_bad_pixels: NaN/inf pixels neutralised (image 0, noise inf) by this run.
    n_absent: planes the sources mark as absent, or found empty (all NaN), by this run.
    """

    store: str
    manifest: str
    n_tiles: int
    views: dict[str, int]
    planes_written: int
    chunks_written: int
    chunks_skipped: int
    chunks_total: int
    new_sources: int
    failed_chunks: list[dict[str, Any]]
    set_aside: list[dict[str, Any]]
    n_bad_pixels: int
    n_absent: int
    seconds: float
    run_id: str

    @property
    def ok(self) -> bool:
        return not self.failed_chunks and not self.set_aside

    @property
    def exit_code(self) -> int:
        """0: all done; 3: done, but sources were set aside; 1: chunks failed (re-run)."""
        if self.failed_chunks:
            return 1
        return 3 if self.set_aside else 0

    def summary(self) -> str:
        views = ", ".join(f"{k}: {v} planes" for k, v in self.views.items()) or "none"
        lines = [
            f"store: {self.store}",
            f"tiles in store: {self.n_tiles}; views: {views}",
            f"planes written by this run: {self.planes_written}",
            f"chunks: {self.chunks_written} written, {self.chunks_skipped} already done, {self.chunks_total} total",
        ]
        if self.n_bad_pixels:
            lines.append(f"NaN/inf pixels neutralised (image 0, noise inf): {self.n_bad_pixels}")
        if self.n_absent:
            lines.append(f"planes absent in their sources (present=False): {self.n_absent}")
        for s in self.set_aside:
            lines.append(f"SET ASIDE [{s['reason']}] {s['message']}")
        for c in self.failed_chunks:
            lines.append(f"FAILED view {c.get('view')} chunk {c['chunk']}: {c['error']} "
                         "-- re-run the same command to retry")
        lines.append(f"manifest: {self.manifest}")
        return "\n".join(lines)


# -- sources ---------------------------------------------------------------------------------------


def expand_tile_sources(sources: list[str] | str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Expand paths, globs, directories and ``s3://`` URLs/prefixes into tile files.

    Directories and prefixes are searched recursively for names ending in
    :data:`~skybatch.sources.tiles.TILE_SUFFIXES`. The result is sorted and free of
    duplicates; a source that matches nothing is returned as given, so that planning reports it.
    """
    return expand_sources(sources, storage_options, suffixes=tuple(TILE_SUFFIXES), exclude=())


# -- the plan table --------------------------------------------------------------------------------


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series([], dtype=t) for k, t in _PLAN_COLUMNS.items()})


def read_plan_table(manifest: Manifest) -> pd.DataFrame:
    """The planned planes of a tile store (empty frame if none)."""
    fs = manifest.fs
    path = join(manifest.url, PLAN_FILE)
    if not fs.exists(path):
        return _empty_table()
    with fs.open(path, "rb") as f:
        return pq.read_table(f).to_pandas()


def _write_plan_table(manifest: Manifest, df: pd.DataFrame) -> None:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df[list(_PLAN_COLUMNS)], preserve_index=False), buf)
    atomic_write_bytes(manifest.fs, join(manifest.url, PLAN_FILE), buf.getvalue())


# -- worker-side functions (module level: pickled by reference) ------------------------------------


def _inspect_one(url: str, instrument: str | None, tile_pattern: str | None, options: dict[str, Any]):
    """Inspect one source on a worker; errors come back as a set-aside record."""
    delay = 0.5
    for attempt in range(3):
        try:
            fs = filesystem(url, options)
            if not fs.exists(url):
                return {"url": url, "reason": "not-found", "message": f"{url}: no such file; check the path or URL"}
            return inspect_tile_source(fs, url, instrument=instrument, tile_pattern=tile_pattern)
        except SourceError as e:
            return {"url": url, "reason": e.reason, "message": str(e)}
        except _TRANSIENT + (OSError,) as e:
            if attempt == 2 or isinstance(e, (FileNotFoundError, PermissionError)):
                return {"url": url, "reason": "unreachable",
                        "message": f"{url}: cannot be read ({type(e).__name__}: {e}); check the bucket name, endpoint "
                        "(--endpoint-url) and credentials, then re-run"}
            time.sleep(delay)
            delay *= 2
        except Exception as e:  # a reader bug or a file nothing can parse
            return {"url": url, "reason": "corrupt", "message": f"{url}: cannot be read ({type(e).__name__}: {e})"}
    raise AssertionError("unreachable")


def _inspect_batch(urls: list[str], instrument: str | None, tile_pattern: str | None, options: dict[str, Any]) -> list:
    return [_inspect_one(u, instrument, tile_pattern, options) for u in urls]


def _write_tile_chunk(
    task: TileChunkTask,
    store: str,
    store_options: dict[str, Any],
    source_options: dict[str, Any],
    shapes: dict[str, tuple[int, int, int]],
    run_id: str,
) -> dict[str, Any]:
    """Read the planes of one (view, chunk), write the whole chunk, then record it in the manifest.

    shapes: view -> (bands, H, W). Memory: the chunk's image, noise and mask (9 bytes per pixel).
    """
    n_bands, height, width = shapes[task.view]
    n = task.stop - task.start
    image = np.full((n, n_bands, height, width), np.nan, np.float32)
    noise = np.full((n, n_bands, height, width), np.inf, np.float32)
    mask = np.zeros((n, n_bands, height, width), np.uint32)
    present = np.zeros((n, n_bands), bool)
    wcs = np.full((n, n_bands), "", dtype=object)
    source = np.full((n, n_bands), "", dtype=object)
    by_url: dict[str, list[tuple[int, int]]] = {}
    for url, ti, bi, _tid, _band, _loc in task.pieces:
        by_url.setdefault(url, []).append((ti - task.start, bi))
    n_bad = n_absent = 0
    for url, slots in by_url.items():
        fs = filesystem(url, source_options)
        instrument, tile_pattern = task.read_options[url]
        planes = read_tile_planes(fs, url, task.planes[url], instrument=instrument, tile_pattern=tile_pattern)
        for (r, bi), p in zip(slots, planes):
            if p.present:
                image[r, bi] = p.image
                noise[r, bi] = p.noise
                mask[r, bi] = p.mask
                present[r, bi] = True
            else:
                n_absent += 1
            wcs[r, bi] = p.wcs
            source[r, bi] = url
            n_bad += p.n_bad_pixels
    g = open_tile_group(store, store_options, consolidated=True)  # the plan consolidated the layout
    write_tile_chunk(g[task.view], task.start,
                     {"image": image, "noise": noise, "mask": mask, "present": present, "wcs": wcs, "source": source})
    record = {
        "chunk": task.chunk, "start": task.start, "stop": task.stop, "fingerprint": task.fingerprint,
        "n_bad_pixels": n_bad, "n_absent": n_absent, "n_planes": len(task.pieces), "view": task.view,
        "sources": sorted(by_url), "run_id": run_id,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Manifest(store, store_options, stage=_stage(task.view)).mark_chunk_done(record)
    return record


def _stage(view: str) -> str:
    return f"tiles-{view}"


# -- planning -------------------------------------------------------------------------------------


def _views_from_store(g) -> dict[str, ViewSpec]:
    """The views of a store, from the attrs of its child groups (also those a killed run created)."""
    out = {}
    for name, sub in g.groups():
        a = dict(sub.attrs)
        if a.get("view") == name and "shape" in a:
            out[name] = ViewSpec.from_attrs(name, a)
    return out


def _validate(
    infos: list[TileSourceInfo], planned: pd.DataFrame, set_aside: list[dict[str, Any]]
) -> list[TileSourceInfo]:
    """Drop sources that repeat a planned (tile, instrument, band) or repeat one inside themselves."""
    have: dict[tuple[str, str, str], str] = {}
    sel = planned[planned["view"] != ""]
    for tid, inst, band, url in zip(sel["tile_id"], sel["instrument"], sel["band"], sel["url"]):
        have[(tid, inst, band)] = url
    accepted = []
    for info in sorted(infos, key=lambda i: i.url):
        keys = [(p.tile_id, p.instrument, p.band) for p in info.planes]
        dup_in = {k for k in keys if keys.count(k) > 1}
        clash = [(k, have[k]) for k in keys if k in have]
        if dup_in:
            k = sorted(dup_in)[0]
            set_aside.append({"url": info.url, "reason": "duplicate",
                              "message": f"{info.url}: holds tile {k[0]} {k[1]} band {k[2]} more than once; "
                              "fix the file"})
            continue
        if clash:
            (k, other) = clash[0]
            set_aside.append({"url": info.url, "reason": "duplicate",
                              "message": f"{info.url}: tile {k[0]} {k[1]} band {k[2]} is already in the store from "
                              f"{other}; leave one of them out, or ingest this one into another store"})
            continue
        for k in keys:
            have[k] = info.url
        accepted.append(info)
    return accepted


def _chunk_tasks(table: pd.DataFrame, views: dict[str, ViewSpec], chunk: int, n_tiles: int, store_uuid: str):
    planes = table[table["view"] != ""].sort_values(["view", "tile_index", "band_index"], kind="stable")
    tasks: list[TileChunkTask] = []
    for view in sorted(views):
        sel = planes[planes["view"] == view]
        if not len(sel):
            continue
        ks = (sel["tile_index"].to_numpy() // chunk).astype(np.int64)
        for k in np.unique(ks):
            part = sel[ks == k]
            pieces = [
                (u, int(t), int(b), str(tid), str(band), str(loc))
                for u, t, b, tid, band, loc in zip(part["url"], part["tile_index"], part["band_index"], part["tile_id"],
                                                   part["band"], part["locator"])
            ]
            start = int(k) * chunk
            fp = chunk_fingerprint(pieces + [[store_uuid, view, views[view].to_attrs()]], start, start + chunk)
            tasks.append(TileChunkTask(seq=len(tasks), view=view, chunk=int(k), start=start,
                                       stop=min(start + chunk, n_tiles), pieces=pieces, fingerprint=fp))
    return tasks


def _job(config: TileIngestConfig) -> StoreJob:
    from skybatch.store.tile_store import SCHEMA_NAME as TILE_SCHEMA

    return StoreJob(config.store, config.store_storage_options(), kind="tiles", stage="ingest", job="ingest-tiles",
                    adopt_schema=TILE_SCHEMA, wait_lock=getattr(config, "wait_lock", None))


def plan_tile_ingest(config: TileIngestConfig, client) -> TileIngestPlan:
    """List and inspect the sources, assign views and tile indices, create/resize the store.

    Writes the store's layout (views, tile ids), the plan table and the quarantine; returns the
    chunks still to write. Safe to repeat: a plan over the same sources changes nothing.
    Runs under the store's writer lock; a target that is not a skybatch tile store is refused.
    """
    with _job(config) as job:
        return _plan_tiles(config, client, job)


def _plan_tiles(config: TileIngestConfig, client, job: StoreJob) -> TileIngestPlan:
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    st_opts = config.store_storage_options()
    src_opts = config.source_storage_options()
    manifest = Manifest(config.store, st_opts)
    set_aside: list[dict[str, Any]] = []

    urls = expand_tile_sources(config.sources, src_opts)
    planned = read_plan_table(manifest)
    exists = tile_store_exists(config.store, st_opts)
    store_uuid = ""
    if exists:
        g = open_tile_group(config.store, st_opts)
        chunk = int(g.attrs["chunk_tiles"])
        store_uuid = str(g.attrs["store_uuid"])
        existing = _views_from_store(g)
        if chunk != config.chunk_tiles:
            print(f"note: store {config.store} was created with chunk_tiles={chunk}; keeping it "
                  f"(--chunk-tiles {config.chunk_tiles} ignored)")
    else:
        chunk, existing = config.chunk_tiles, {}
        planned = _empty_table()  # a manifest without its store: the store was deleted; start over
    known = set(planned["url"])
    new = [u for u in urls if u not in known]

    infos: list[TileSourceInfo] = []
    if new:
        n_workers = max(1, len(client.scheduler_info()["workers"]))
        per = max(1, min(64, math.ceil(len(new) / (4 * n_workers))))
        batches = [new[i : i + per] for i in range(0, len(new), per)]
        futures = client.map(
            _inspect_batch, batches, instrument=config.instrument, tile_pattern=config.tile_pattern, options=src_opts,
            pure=False, key=[f"inspect-tiles-{run_id}-{i}" for i in range(len(batches))],
        )
        for res in client.gather(futures):
            for r in res:
                (set_aside.append(r) if isinstance(r, dict) else infos.append(r))

    accepted = _validate(infos, planned, set_aside)
    groups: dict[tuple[str, int, int], set[str]] = {}
    for info in accepted:
        for p in info.planes:
            groups.setdefault((p.instrument, p.height, p.width), set()).add(p.band)
    assigned = assign_views(existing, groups, config.shard_planes)
    final = []
    for info in accepted:
        bad = [p for p in info.planes if p.band not in assigned[(p.instrument, p.height, p.width)].bands]
        if bad:
            v = assigned[(bad[0].instrument, bad[0].height, bad[0].width)]
            set_aside.append({
                "url": info.url, "reason": "band-mismatch",
                "message": f"{info.url}: band {bad[0].band} ({bad[0].instrument}, {bad[0].height}x{bad[0].width} "
                f"px) has no place in view {v.name!r} (bands {list(v.bands)}); ingest it into another store",
            })
            continue
        final.append(info)
    views = {**existing}
    for info in final:
        for p in info.planes:
            v = assigned[(p.instrument, p.height, p.width)]
            views[v.name] = v

    # tile indices: earlier tiles keep theirs; new ones follow, sorted by id
    tile_index: dict[str, int] = dict(zip(planned["tile_id"], planned["tile_index"]))
    n_old = (int(planned["tile_index"].max()) + 1) if len(planned) else 0
    new_tiles = sorted({t for info in final for t in info.tile_ids} - set(tile_index))
    for i, t in enumerate(new_tiles):
        tile_index[t] = n_old + i
    n_tiles = n_old + len(new_tiles)

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows = []
    n_absent = 0
    for info in final:
        n_absent += info.n_absent
        base = {"url": info.url, "format": info.format, "size": int(info.size), "checksum": info.checksum,
                "run_id": run_id, "planned_at": now, "read_instrument": config.instrument or "",
                "read_tile_pattern": config.tile_pattern or ""}
        for p in info.planes:
            v = assigned[(p.instrument, p.height, p.width)]
            rows.append({**base, "tile_id": p.tile_id, "tile_index": tile_index[p.tile_id], "view": v.name,
                         "band": p.band, "band_index": v.bands.index(p.band), "instrument": p.instrument,
                         "locator": p.locator, "height": p.height, "width": p.width, "unit": p.unit})
        if not info.planes:
            for t in info.tile_ids:
                rows.append({**base, "tile_id": t, "tile_index": tile_index[t], "view": "", "band": "",
                             "band_index": -1, "instrument": "", "locator": "", "height": 0, "width": 0, "unit": ""})
    table = planned
    if rows:
        table = pd.concat([planned, pd.DataFrame(rows, columns=list(_PLAN_COLUMNS))], ignore_index=True)

    # The store's layout changes only with new plan rows (also those of a run killed before its plan was saved).
    if rows:
        if not exists:
            try:
                g = create_tile_store(config.store, chunk, {
                    "skybatch_version": skybatch.__version__, "formats": [], "manifest": manifest.url,
                    "provenance": {},
                }, st_opts)
            except FileExistsError as e:
                raise JobRefused(f"{config.store}: something appeared there while planning ({e}); nothing was "
                                 "written; choose another store path") from None
            job.created(dict(g.attrs[IDENTITY_ATTR]))
        g = open_tile_group(config.store, st_opts)
        store_uuid = str(g.attrs["store_uuid"])
        view_attrs = {"skybatch_version": skybatch.__version__, "manifest": manifest.url}
        ids_in_order = [t for t, _ in sorted(tile_index.items(), key=lambda kv: kv[1])]
        new_planes = [p for info in final for p in info.planes]
        for name, spec in views.items():
            ensure_view(g, spec, chunk, n_tiles, view_attrs)
        resize_tiles(g, n_tiles)
        for name, spec in views.items():
            v = g[name]
            _sync_tile_ids(v, ids_in_order, n_old, chunk)
            _merge_view_attrs(v, spec, new_planes, [info for info in final if info.mask_bits])
        g.update_attributes({
            "views": {n: s.to_attrs() for n, s in views.items()},
            "n_tiles": int(n_tiles),
            "formats": sorted(set(g.attrs.get("formats", [])) | {i.format for i in final}),
        })
        consolidate(config.store, st_opts)
        _write_plan_table(manifest, table)
    if set_aside:
        manifest.add_quarantine(set_aside, run_id)

    tasks = _chunk_tasks(table, views, chunk, n_tiles, store_uuid) if views else []
    todo = []
    done_by_view = {v: Manifest(config.store, st_opts, stage=_stage(v)).done_chunks() for v in views}
    for t in tasks:
        if t.fingerprint not in done_by_view[t.view].get(t.chunk, set()):
            todo.append(t)
    for i, t in enumerate(todo):
        t.seq = i
    return TileIngestPlan(
        config=config, run_id=run_id, views=views, n_tiles=n_tiles, table=table, todo=todo, n_chunks=len(tasks),
        new_sources=[i.url for i in final], set_aside=set_aside, n_absent=n_absent,
    )


def _sync_tile_ids(v, ids: list[str], n_old: int, chunk: int) -> None:
    """Make the view's ``tile_id`` equal ``ids``: write the new tiles' chunks, or all if the old part differs.

    ``n_old`` tiles were in the finished earlier plan; a view created (or left half-written) by
    an interrupted run is rewritten whole.
    """
    n = len(ids)
    if n_old and [str(t) for t in v["tile_id"][:n_old]] != ids[:n_old]:
        write_tile_ids(v, 0, ids)
    elif n > n_old:
        start = (n_old // chunk) * chunk
        write_tile_ids(v, start, ids[start:n])


def _merge_view_attrs(v, spec: ViewSpec, planes: list[TilePlaneInfo], infos: list[TileSourceInfo]) -> None:
    """Record units per band and LSST mask plane bits learnt from the new planes (first wins)."""
    units = dict(v.attrs.get("band_units", {}))
    for p in planes:
        if p.instrument == spec.instrument and (p.height, p.width) == (spec.height, spec.width) and p.unit:
            units.setdefault(p.band, p.unit)
    bits = dict(v.attrs.get("mask_bits", {}))
    for info in infos:
        if any(p.instrument == spec.instrument and (p.height, p.width) == (spec.height, spec.width)
               for p in info.planes):
            for k, b in info.mask_bits.items():
                bits.setdefault(k, b)
    if units != dict(v.attrs.get("band_units", {})) or bits != dict(v.attrs.get("mask_bits", {})):
        v.update_attributes({"band_units": units, "mask_bits": bits})
        common = set(units.values())
        unit = common.pop() if len(common) == 1 else ""
        for name in ("image", "noise"):
            if v[name].attrs.get("units") != unit:
                v[name].attrs["units"] = unit


# -- execution -----------------------------------------------------------------------------------


def _provenance(plan: TileIngestPlan, st_opts: dict[str, Any]) -> dict[str, Any]:
    src = plan.table.drop_duplicates("url")
    ident = json.dumps(src[["url", "size", "checksum"]].values.tolist(), default=str)
    digest = hashlib.sha256(ident.encode()).hexdigest()
    return {
        "n_sources": int(len(src)),
        "n_planes": int((plan.table["view"] != "").sum()),
        "total_source_bytes": int(src["size"].sum()) if len(src) else 0,
        "sources_sha256": digest,
        "sources_table": f"{PLAN_FILE} in the manifest (url, size, checksum, tile, band, view per plane)",
        "source_examples": src["url"].head(5).tolist(),
        "skybatch_version": skybatch.__version__,
        "settings": plan.config.public_dict(),
        "store_options": public_options(st_opts),
        "last_run_id": plan.run_id,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def execute_tile_plan(plan: TileIngestPlan, client) -> TileIngestReport:
    """Write every (view, chunk) the plan lists as to-do, one Dask task each; then update provenance.

    Takes the writer lock again; a store replaced or re-planned since is planned again first.
    """
    with _job(plan.config) as job:
        if read_plan_table(job.manifest)["url"].tolist() != plan.table["url"].tolist():
            print(f"note: {plan.config.store} changed since it was planned; planning again", file=sys.stderr)
            plan = _plan_tiles(plan.config, client, job)
        return _execute_tiles(plan, client)


def _execute_tiles(plan: TileIngestPlan, client) -> TileIngestReport:
    t0 = time.perf_counter()
    config = plan.config
    st_opts = config.store_storage_options()
    src_opts = config.source_storage_options()
    manifest = Manifest(config.store, st_opts)
    failed: list[dict[str, Any]] = []
    written = n_bad = 0
    n_absent = plan.n_absent
    if plan.todo:
        sel = plan.table[plan.table["view"] != ""]
        info_of = {
            (u, tid, band, loc): TilePlaneInfo(tid, inst, band, int(h), int(w), loc, unit)
            for u, tid, band, loc, inst, h, w, unit in zip(sel["url"], sel["tile_id"], sel["band"], sel["locator"],
                                                          sel["instrument"], sel["height"], sel["width"], sel["unit"])
        }
        src = sel.drop_duplicates("url")
        read_options = {
            u: (i or None, p or None) for u, i, p in zip(src["url"], src["read_instrument"], src["read_tile_pattern"])
        }
        for t in plan.todo:
            t.planes = {}
            for u, _ti, _bi, tid, band, loc in t.pieces:
                t.planes.setdefault(u, []).append(info_of[(u, tid, band, loc)])
            t.read_options = {u: read_options[u] for u in t.planes}
        shapes = {name: (len(v.bands), v.height, v.width) for name, v in plan.views.items()}
        out = run_chunk_tasks(
            client, plan.todo, _write_tile_chunk, config.store, st_opts, src_opts, shapes, plan.run_id,
            key_prefix=f"ingest-tiles-{plan.run_id}", rows=lambda t: (t.start, t.stop), index=lambda t: t.seq,
            progress=config.progress, desc="ingest-tiles", unit="tiles", retries=config.retries,
        )
        by_seq = {t.seq: t for t in plan.todo}
        failed = [{**f, "view": by_seq[f["chunk"]].view, "chunk": by_seq[f["chunk"]].chunk} for f in out.failed]
        written = sum(int(r["n_planes"]) for r in out.records)
        n_bad = sum(int(r["n_bad_pixels"]) for r in out.records)
        n_absent += sum(int(r["n_absent"]) for r in out.records)
    if plan.views and (plan.todo or plan.new_sources):
        g = open_tile_group(config.store, st_opts)
        prov = _provenance(plan, st_opts)
        g.attrs["provenance"] = prov
        for name in plan.views:
            g[name].attrs["provenance"] = prov
        consolidate(config.store, st_opts)
    planned_urls = set(plan.table["url"])
    q = manifest.quarantined()
    q = q[~q["url"].isin(planned_urls)]
    set_aside = [{k: r[k] for k in ("url", "reason", "message")} for r in q.to_dict("records")]
    per_view = plan.table[plan.table["view"] != ""]["view"].value_counts()
    return TileIngestReport(
        store=config.store, manifest=manifest.url, n_tiles=plan.n_tiles,
        views={v: int(per_view.get(v, 0)) for v in sorted(plan.views)}, planes_written=written,
        chunks_written=len(plan.todo) - len(failed), chunks_skipped=plan.n_chunks - len(plan.todo),
        chunks_total=plan.n_chunks, new_sources=len(plan.new_sources), failed_chunks=failed, set_aside=set_aside,
        n_bad_pixels=n_bad, n_absent=n_absent, seconds=time.perf_counter() - t0, run_id=plan.run_id,
    )


def run_with_client(config: TileIngestConfig, client) -> TileIngestReport:
    """Plan and execute a tile ingest on an existing Dask client (holding the store's lock throughout)."""
    with _job(config):
        return execute_tile_plan(plan_tile_ingest(config, client), client)


def run(config: TileIngestConfig) -> TileIngestReport:
    """Plan and execute a tile ingest on a cluster started from ``config.cluster``."""
    from skybatch.cluster import cluster_client

    with cluster_client(config.cluster) as client:
        return run_with_client(config, client)


def ingest_tiles(
    sources: list[str] | str,
    store: str,
    chunk_tiles: int = 4,
    client=None,
    **settings: Any,
) -> TileIngestReport:
    """Ingest ``.npz`` / FITS image tiles into a tile store; see :class:`TileIngestConfig` for settings.

    With ``client=None`` a cluster is started from ``settings.get("cluster", "auto")``.
    Returns a :class:`TileIngestReport` (planes written, chunks, sources set aside).
    """
    config = TileIngestConfig(sources=sources, store=store, chunk_tiles=chunk_tiles, **settings)
    return run(config) if client is None else run_with_client(config, client)
