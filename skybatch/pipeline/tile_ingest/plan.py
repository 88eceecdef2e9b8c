"""Planning a tile ingest: check the inspected sources, assign views and tile indices, create or
resize the store and write its layout, and list the (view, chunk) tasks still to write.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

import skybatch
from skybatch.pipeline.jobcore import StoreJob
from skybatch.sources.tiles import TilePlaneInfo, TileSourceInfo
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
    write_tile_ids,
)

from .config import TileIngestConfig
from .sources import _inspect_batch, expand_tile_sources
from .table import _PLAN_COLUMNS, _empty_table, _stage, _write_plan_table, read_plan_table


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
        for spec in views.values():
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
