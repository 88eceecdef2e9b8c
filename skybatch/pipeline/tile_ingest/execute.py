"""Executing a tile ingest plan: one Dask task per (view, chunk) reads its planes and writes the
whole chunk; then provenance and the report. Also the doors :func:`run`,
:func:`run_with_client` and :func:`ingest_tiles`.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import numpy as np

from skybatch.pipeline.chunkrun import run_chunk_tasks
from skybatch.pipeline.sourcejob import run_on_cluster, source_provenance
from skybatch.sources.tiles import TilePlaneInfo, read_tile_planes
from skybatch.store.fsutil import filesystem
from skybatch.store.manifest import Manifest
from skybatch.store.retry import retry_call
from skybatch.store.tile_store import (
    consolidate,
    open_tile_group,
    write_tile_chunk,
)

from .config import TileIngestConfig
from .plan import TileChunkTask, TileIngestPlan, _job, _plan_tiles, plan_tile_ingest
from .report import TileIngestReport
from .table import PLAN_FILE, _stage, read_plan_table


_VIEWS: dict[tuple[str, str], Any] = {}
_VIEWS_LOCK = threading.Lock()


def _view_group(store: str, store_options: dict[str, Any], run_id: str, view: str):
    """The view's Zarr group, opened once per run per worker process.

    Opening the store (consolidated metadata) costs a few event-loop round trips per task; within
    one run the layout does not change (the plan created, resized and consolidated it first), so
    the groups are kept, keyed by store and run id (a new run opens them again).
    """
    key = (store, run_id)
    with _VIEWS_LOCK:
        got = _VIEWS.get(key)
        if got is None:
            _VIEWS.clear()
            got = _VIEWS[key] = {"root": open_tile_group(store, store_options, consolidated=True)}
        if view not in got:
            got[view] = got["root"][view]
        return got[view]


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
    if task.planes is None or task.read_options is None:
        raise RuntimeError(f"{task.view} chunk {task.chunk}: submitted before its planes were filled")
    n_bad = n_absent = 0
    for url, slots in by_url.items():
        fs = filesystem(url, source_options)
        instrument, tile_pattern = task.read_options[url]
        planes = retry_call(read_tile_planes, fs, url, task.planes[url], instrument=instrument,
                            tile_pattern=tile_pattern, what=f"read the planes of {url}")
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
    write_tile_chunk(_view_group(store, store_options, run_id, task.view), task.start,
                     {"image": image, "noise": noise, "mask": mask, "present": present, "wcs": wcs, "source": source})
    record = {
        "chunk": task.chunk, "start": task.start, "stop": task.stop, "fingerprint": task.fingerprint,
        "n_bad_pixels": n_bad, "n_absent": n_absent, "n_planes": len(task.pieces), "view": task.view,
        "sources": sorted(by_url), "run_id": run_id,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Manifest(store, store_options, stage=_stage(task.view)).mark_chunk_done(record)
    return record


def _provenance(plan: TileIngestPlan, st_opts: dict[str, Any]) -> dict[str, Any]:
    return source_provenance(plan.table.drop_duplicates("url"), ["url", "size", "checksum"],
                             f"{PLAN_FILE} in the manifest (url, size, checksum, tile, band, view per plane)",
                             plan.config, plan.run_id, st_opts, n_planes=int((plan.table["view"] != "").sum()))


def execute_tile_plan(plan: TileIngestPlan, client) -> TileIngestReport:
    """Write every (view, chunk) the plan lists as to-do, one Dask task each; then update provenance.

    Takes the writer lock again; a store replaced or re-planned since is planned again first.
    """
    with _job(plan.config) as job:
        if read_plan_table(job.open_manifest())["url"].tolist() != plan.table["url"].tolist():
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
    """Plan and execute a tile ingest on the current Dask client, else on a cluster from ``config.cluster``."""
    return run_on_cluster(run_with_client, config)


def ingest_tiles(
    sources: list[str] | str,
    store: str,
    chunk_tiles: int = 4,
    client=None,
    **settings: Any,
) -> TileIngestReport:
    """Ingest ``.npz`` / FITS image tiles into a tile store; see :class:`TileIngestConfig` for settings.

    With ``client=None``: the current Dask client, else a cluster from ``settings.get("cluster", "auto")``.
    Returns a :class:`TileIngestReport` (planes written, chunks, sources set aside).
    """
    config = TileIngestConfig(sources=[sources] if isinstance(sources, str) else list(sources), store=store, chunk_tiles=chunk_tiles, **settings)
    return run(config) if client is None else run_with_client(config, client)
