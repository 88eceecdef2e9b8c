"""Planning an ingest: list and inspect sources, assign rows, create or grow the store, list chunk tasks."""

from __future__ import annotations

import math
import sys
import time
import uuid
from typing import Any

import numpy as np
import pandas as pd

import skybatch
from skybatch.pipeline.ingest.config import ChunkTask, IngestConfig, IngestPlan
from skybatch.pipeline.ingest_checks import duplicate_files, inspect_batch
from skybatch.pipeline.jobcore import StoreJob
from skybatch.sources.base import Grid, SourceInfo
from skybatch.store.fsutil import expand_sources
from skybatch.store.identity import IDENTITY_ATTR, JobRefused
from skybatch.store.manifest import chunk_fingerprint
from skybatch.store.schema import SCHEMA_NAME
from skybatch.store.spectra_store import (
    PER_SPECTRUM_COLUMNS,
    consolidate,
    create_spectra_store,
    missing_creation_attrs,
    open_group,
    resize_spectra_store,
)

__all__ = ["plan_ingest", "plan_locked", "chunk_tasks", "ingest_job"]


def chunk_tasks(sources: pd.DataFrame, n_total: int, chunk: int) -> list[ChunkTask]:
    starts = sources["spectrum_start"].to_numpy(np.int64)
    stops = starts + sources["n_rows"].to_numpy(np.int64)
    urls = sources["url"].tolist()
    out = []
    for k in range(math.ceil(n_total / chunk)):
        a, b = k * chunk, min((k + 1) * chunk, n_total)
        i0 = int(np.searchsorted(stops, a, side="right"))
        pieces = []
        i = i0
        while i < len(urls) and starts[i] < b:
            lo, hi = max(a, starts[i]), min(b, stops[i])
            if hi > lo:
                pieces.append((urls[i], int(lo - starts[i]), int(hi - starts[i])))
            i += 1
        out.append(ChunkTask(k, a, b, pieces, chunk_fingerprint(pieces, a, b)))
    return out


def ingest_job(config: IngestConfig) -> StoreJob:
    return StoreJob(config.store, config.store_storage_options(), kind="spectra", stage="ingest", job="ingest",
                    adopt_schema=SCHEMA_NAME, wait_lock=config.wait_lock)


def _check_created(store: str, attrs: dict[str, Any], n_rows: int) -> None:
    """Refuse, saying what to do, a store of ours whose creation attrs are incomplete.

    Stores made by this skybatch get every creation attr and their identity in one write (an
    interrupted creation is completed by the next run); one that has its identity but lacks
    other creation attrs was left by an older skybatch killed while creating it.
    """
    missing = missing_creation_attrs(attrs)
    if missing:
        raise JobRefused(
            f"{store} is a skybatch spectra store (uuid {attrs.get(IDENTITY_ATTR, {}).get('uuid')}) whose creation "
            f"did not finish: its attrs lack {missing} (it holds {n_rows} spectra rows). Nothing was written. "
            f"Move it and its manifest away (e.g. `mv {store} {store}.incomplete; mv {store}.manifest "
            f"{store}.incomplete.manifest`) and re-run the same command to create it again"
        )


def plan_ingest(config: IngestConfig, client) -> IngestPlan:
    """List and inspect sources, assign rows, create or grow the store (under the store's writer lock).

    Safe to repeat: a plan written by an interrupted run is picked up again.
    Raises :class:`~skybatch.store.identity.JobRefused` (foreign target, lock held).
    """
    with ingest_job(config) as job:
        return plan_locked(config, client, job)


def plan_locked(config: IngestConfig, client, job: StoreJob) -> IngestPlan:
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    src_opts = config.source_storage_options()
    st_opts = config.store_storage_options()
    manifest = job.open_manifest()

    set_aside: list[dict[str, Any]] = []
    urls: list[str] = []
    for spec in config.sources:
        try:
            urls += expand_sources(spec, src_opts)
        except Exception as e:  # an unreachable bucket or bad glob must not stop the other sources
            set_aside.append({
                "url": spec, "reason": "unreachable",
                "message": f"{spec}: cannot list ({type(e).__name__}: {e}); check the bucket, endpoint and credentials",
            })
    urls = sorted(dict.fromkeys(urls))

    planned = manifest.read_sources()
    exists = job.identity is not None
    if exists:
        g = open_group(config.store, st_opts)
        _check_created(config.store, dict(g.attrs), int(g["flux"].shape[0]) if "flux" in g else 0)
        grid: Grid | None = Grid.from_attrs(dict(g.attrs["grid"]))
        columns = dict(g.attrs["per_spectrum_columns"])
        chunk = int(g.attrs["chunk_spectra"])
        n_store = int(g["flux"].shape[0])
        n_planned = int((planned["spectrum_start"] + planned["n_rows"]).max()) if len(planned) else 0
        if n_store > n_planned:  # rows the manifest does not place (fewer: a run killed before resizing)
            raise JobRefused(
                f"{config.store} holds {n_store} spectra but its manifest {manifest.url} places {n_planned}; the "
                "manifest is missing or belongs to another store, so new rows cannot be placed safely. Ingest into "
                "a new store"
            )
        if chunk != config.chunk_spectra:
            print(f"note: store {config.store} was created with chunk_spectra={chunk}; keeping it "
                  f"(--chunk-spectra {config.chunk_spectra} ignored)")
    else:
        grid, columns, chunk = None, {}, config.chunk_spectra  # columns: the first accepted source's
    known = set(planned["url"])
    new = [u for u in urls if u not in known]

    infos: list[SourceInfo] = []
    failed_sources: list[dict[str, Any]] = []
    if new:
        per = max(1, min(64, math.ceil(len(new) / (4 * max(1, len(client.scheduler_info()["workers"]))))))
        batches = [new[i : i + per] for i in range(0, len(new), per)]
        futures = client.map(
            inspect_batch, batches, fmt=config.format, keep_nonscience=config.keep_nonscience,
            options=src_opts, verify_checksums=config.verify_checksums, pure=False,
            key=[f"inspect-{run_id}-{i}" for i in range(len(batches))],
        )
        for res in client.gather(futures):
            for r in res:
                if isinstance(r, SourceInfo):
                    infos.append(r)
                elif "failed" in r:
                    failed_sources.append(r)
                else:
                    set_aside.append(r)
    for r in failed_sources[:1]:
        print(f"inspecting {r['url']} failed (a bug, not bad input):\n{r['traceback']}", file=sys.stderr)

    dups = duplicate_files(infos, planned.to_dict("records"), src_opts, client) if infos and config.dedupe_files else {}
    for dup, orig in sorted(dups.items()):
        set_aside.append({"url": dup, "reason": "duplicate",
                          "message": f"{dup}: the same bytes as {orig}, which is ingested once; remove one of them"})
    infos = [i for i in infos if i.url not in dups]

    formats: dict[str, str] = {}
    accepted: list[SourceInfo] = []
    for info in sorted(infos, key=lambda i: i.url):
        if grid is None:
            grid = info.grid
            columns = {**PER_SPECTRUM_COLUMNS, **info.extra_columns}
        if not info.grid.same_as(grid):
            set_aside.append({
                "url": info.url, "reason": "grid-mismatch",
                "message": f"{info.url}: its wavelength grid ({info.grid.name or info.grid.kind}, {info.grid.n} px from "
                f"{info.grid.start}) does not fit this store's grid ({grid.name or grid.kind}, {grid.n} px from "
                f"{grid.start}); a store holds one survey grid: ingest it into another store",
            })
            continue
        want = {k: v for k, v in columns.items() if k not in PER_SPECTRUM_COLUMNS}
        if info.extra_columns and set(info.extra_columns) != set(want):
            set_aside.append({
                "url": info.url, "reason": "schema-mismatch",
                "message": f"{info.url}: its {info.format} columns differ from this store's; ingest it into another store",
            })
            continue
        if info.n_rows == 0:
            set_aside.append({"url": info.url, "reason": "empty", "message": f"{info.url}: no science spectra in it"})
            continue
        accepted.append(info)
        formats[info.url] = info.format

    n_old = int((planned["spectrum_start"] + planned["n_rows"]).max()) if len(planned) else 0
    rows = []
    at = n_old
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for info in accepted:
        rows.append({
            "url": info.url, "format": info.format, "n_rows": int(info.n_rows), "spectrum_start": at,
            "size": int(info.size), "checksum": info.checksum, "rows": [int(r) for r in np.asarray(info.rows)],
            "run_id": run_id, "planned_at": now,
        })
        at += int(info.n_rows)
    sources = pd.concat([planned, pd.DataFrame(rows)], ignore_index=True) if rows else planned
    n_total = at

    tasks: list[ChunkTask] = []
    todo: list[ChunkTask] = []
    if grid is not None:
        if not exists:
            try:
                g = create_spectra_store(
                    config.store, grid, chunk,
                    attrs={
                        "skybatch_version": skybatch.__version__,
                        "formats": sorted(set(formats.values())),
                        "manifest": manifest.url,
                        "provenance": {},
                    },
                    extra_columns={k: v for k, v in columns.items() if k not in PER_SPECTRUM_COLUMNS},
                    storage_options=st_opts,
                )
            except FileExistsError as e:
                raise JobRefused(f"{config.store}: something appeared there while planning ({e}); nothing was "
                                 "written; choose another store path") from None
            job.created(dict(g.attrs[IDENTITY_ATTR]))
        if rows:
            manifest.write_sources(sources)
        g = open_group(config.store, st_opts)
        resize_spectra_store(g, n_total)
        tasks = chunk_tasks(sources, n_total, chunk)
        todo = job.todo(tasks, len(tasks))
        consolidate(config.store, st_opts)
    if set_aside:
        manifest.add_quarantine(set_aside, run_id)
    return IngestPlan(
        config=config, run_id=run_id, grid=grid, n_spectra=n_total, sources=sources, todo=todo,
        n_chunks=len(tasks), new_sources=[i.url for i in accepted], set_aside=set_aside,
        formats={**dict(zip(planned["url"], planned["format"])), **formats},
        infos={i.url: i for i in accepted}, failed_sources=failed_sources,
        store_uuid=(job.identity or {}).get("uuid"),
    )
