"""Ingest: survey FITS files (local or S3) into a chunked spectra store, on Dask.

The job is planned before it runs:

1. **list** the sources (paths, globs, directories, ``s3://`` URLs or prefixes);
2. **inspect** every new file on the cluster (headers and per-target tables
   only) to learn its science rows, grid and size; anything unusable is set
   aside in the manifest's quarantine with its reason;
3. **assign** rows: new sources are appended after the rows already planned, so
   earlier rows never move; the store is resized to the new total;
4. **write**: one Dask task per store chunk reads exactly the source rows that
   fill that chunk and writes the whole chunk, then records it in the manifest.
   No two tasks touch one Zarr chunk; a worker holds one chunk at a time.

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

import hashlib
import json
import math
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

import skybatch
from skybatch.pipeline.ingest_checks import _reader_for, duplicate_files, duplicate_targets, inspect_batch
from skybatch.pipeline.jobcore import StoreJob, exit_status, run_chunks
from skybatch.sources.base import Grid, SourceError, SourceInfo, SpectraBlock
from skybatch.store.fsutil import StorageSettings, expand_sources, filesystem, public_options
from skybatch.store.identity import IDENTITY_ATTR, JobRefused
from skybatch.store.manifest import chunk_fingerprint
from skybatch.store.schema import SCHEMA_NAME
from skybatch.store.spectra_store import (
    PER_SPECTRUM_COLUMNS,
    consolidate,
    create_spectra_store,
    open_group,
    resize_spectra_store,
    write_rows,
)

__all__ = ["IngestConfig", "IngestPlan", "IngestReport", "plan_ingest", "execute_plan", "run", "run_with_client", "ingest"]

FORMATS = ("auto", "desi", "sdss", "skyvac")

#: Mask bit set on every pixel of a row whose source file was set aside while its chunk was written.
SET_ASIDE_MASK_BIT = 31


@dataclass
class IngestConfig(StorageSettings):
    """Settings of one ingest run (CLI flags, YAML keys and flow parameters map onto these).

    sources: local paths, globs, directories, ``s3://`` URLs or prefixes of FITS files.
    store: where the Zarr store goes: a local path or an ``s3://`` URL.
    format: ``auto`` (detect per file), ``desi``, ``sdss`` or ``skyvac``.
    chunk_spectra: spectra per Zarr chunk (and per Dask task); a chunk of DESI
        spectra takes 12 bytes x 7781 pixels = 93 kB per spectrum in memory.
    keep_nonscience: keep sky fibres and negative-TARGETID rows of DESI coadds.
    cluster: a cluster profile name (``auto``, ``local``, ``local-cuda``,
        ``slurm``, ``kubernetes``, ``address``), a YAML path, or a scheduler address.
    endpoint_url: an S3-compatible endpoint for sources and store (default: AWS,
        or ``$AWS_ENDPOINT_URL``).
    anon: anonymous S3 access; ``None`` = anonymous when no credentials are configured.
    source_options / store_options: extra fsspec options for sources / store
        (e.g. a public source bucket and a private store bucket).
    retries: attempts for a chunk task that fails on a transient error.
    progress: show a progress bar on the terminal.
    verify_checksums: verify FITS CHECKSUM/DATASUM keywords when planning (reads each new
        file once); a mismatch sets the file aside with reason ``checksum``.
    dedupe_files: read a file reached under two names (same bytes) once and set the other
        name aside as ``duplicate`` (False: ingest every name, e.g. benchmarks built of symlinks).
    wait_lock: seconds to wait while another job writes the store (``--wait-lock``);
        None: ``$SKYBATCH_WAIT_LOCK`` or 0 (stop at once, naming the other writer).
    """

    sources: list[str]
    store: str
    format: str = "auto"
    chunk_spectra: int = 2048
    keep_nonscience: bool = False
    cluster: str = "auto"
    endpoint_url: str | None = None
    anon: bool | None = None
    source_options: dict[str, Any] = field(default_factory=dict)
    store_options: dict[str, Any] = field(default_factory=dict)
    retries: int = 3
    progress: bool = True
    verify_checksums: bool = True
    dedupe_files: bool = True
    wait_lock: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.sources, str):
            self.sources = [self.sources]
        if not self.sources:
            raise ValueError("sources: give at least one path, glob or s3:// URL (--source)")
        if not self.store:
            raise ValueError("store: give a local path or s3:// URL for the Zarr store (--store)")
        if self.format not in FORMATS:
            raise ValueError(f"format: {self.format!r} is not one of {FORMATS} (--format)")
        if not isinstance(self.chunk_spectra, int) or self.chunk_spectra < 1:
            raise ValueError(f"chunk_spectra: must be a positive integer, got {self.chunk_spectra!r} (--chunk-spectra)")
        if self.retries < 0:
            raise ValueError("retries: must be >= 0")


    def public_dict(self) -> dict[str, Any]:
        """The settings as recorded in store attrs (no credentials)."""
        d = asdict(self)
        d["source_options"] = public_options(self.source_options)
        d["store_options"] = public_options(self.store_options)
        d.pop("progress", None)
        d.pop("wait_lock", None)
        return d


@dataclass
class ChunkTask:
    """One store chunk to write: rows ``start:stop`` filled from ``pieces``.

    pieces: (source url, first kept row, stop kept row) in store order.
    """

    chunk: int
    start: int
    stop: int
    pieces: list[tuple[str, int, int]]
    fingerprint: str
    #: url -> planned format, n_rows and kept rows of each source in ``pieces`` (filled before submission)
    source_rows: dict[str, dict[str, Any]] | None = None


@dataclass
class IngestPlan:
    """What :func:`execute_plan` will do; built by :func:`plan_ingest`."""

    config: IngestConfig
    run_id: str
    grid: Grid | None
    n_spectra: int
    sources: pd.DataFrame
    todo: list[ChunkTask]
    n_chunks: int
    new_sources: list[str]
    set_aside: list[dict[str, Any]]
    formats: dict[str, str]
    #: what this run's inspection learnt per new source (saves re-reading headers when writing)
    infos: dict[str, SourceInfo] = field(default_factory=dict)
    #: sources whose inspection hit an unexpected error (a bug): url, error, traceback
    failed_sources: list[dict[str, Any]] = field(default_factory=list)
    #: the uuid of the store the plan was made for (None: no store yet)
    store_uuid: str | None = None


@dataclass
class IngestReport:
    """The outcome of an ingest run.

    n_spectra: spectra in the store after the run.
    spectra_written: spectra written by this run.
    chunks_written / chunks_skipped / chunks_total: per-chunk counts.
    failed_chunks: chunks that failed after retries, with the error (re-run to retry).
    set_aside: sources set aside (url, reason, message): fix them and re-run.
    n_bad_pixels: NaN/inf pixels found and zeroed (ivar=0, mask bit set).
    duplicate_targets: rows sharing (TARGETID, survey, program) with another row of the store.
    duplicate_examples: a few of those keys with the sources they come from.
    """

    store: str
    manifest: str
    n_spectra: int
    spectra_written: int
    chunks_written: int
    chunks_skipped: int
    chunks_total: int
    new_sources: int
    failed_chunks: list[dict[str, Any]]
    set_aside: list[dict[str, Any]]
    n_bad_pixels: int
    seconds: float
    run_id: str
    duplicate_targets: int = 0
    duplicate_examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed_chunks and not self.set_aside

    @property
    def exit_code(self) -> int:
        """0: all done; 3: done, but sources were set aside; 1: chunks failed (re-run)."""
        return exit_status(self.failed_chunks, self.set_aside)

    def summary(self) -> str:
        lines = [
            f"store: {self.store}",
            f"spectra in store: {self.n_spectra} ({self.spectra_written} written by this run)",
            f"chunks: {self.chunks_written} written, {self.chunks_skipped} already done, {self.chunks_total} total",
        ]
        if self.n_bad_pixels:
            lines.append(f"NaN/inf pixels zeroed (ivar=0, mask bit set): {self.n_bad_pixels}")
        for s in self.set_aside:
            lines.append(f"SET ASIDE [{s['reason']}] {s['message']}")
        if self.duplicate_targets:
            lines.append(f"WARNING {self.duplicate_targets} spectra share (TARGETID, survey, program) with another "
                         "row, e.g. " + "; ".join(self.duplicate_examples))
        for c in self.failed_chunks:
            what = f"chunk {c['chunk']}" if c.get("chunk") is not None else f"source {c.get('url')}"
            lines.append(f"FAILED {what}: {c['error']} -- re-run the same command to retry")
        lines.append(f"manifest: {self.manifest}")
        return "\n".join(lines)


# -- worker-side functions (module level: pickled by reference) ------------------------------


def _empty_columns(columns: dict[str, str], n: int) -> dict[str, np.ndarray]:
    from skybatch.store.spectra_store import _fill

    return {k: np.full(n, _fill(t), dtype=object if t in ("object", "str") else t) for k, t in columns.items()}


def _read_piece(task: ChunkTask, url: str, a: int, b: int, source_options, keep_nonscience) -> SpectraBlock:
    src = task.source_rows[url]
    fs = filesystem(url, source_options)
    reader = _reader_for(fs, url, src["format"])
    info = src.get("info")
    if info is None:  # planned by an earlier run: read the headers again (read() checks identity)
        info = reader.inspect(fs, url, keep_nonscience=keep_nonscience)
    if info.n_rows != src["n_rows"] or not np.array_equal(np.asarray(info.rows), np.asarray(src["rows"])):
        raise SourceError(
            url, "changed",
            f"changed since it was planned ({src['n_rows']} rows then, {info.n_rows} now); "
            "restore the original file, or ingest the new version into a new store",
        )
    block: SpectraBlock = reader.read(fs, info, a, b)
    if len(block) != b - a:
        raise SourceError(url, "row-mismatch", f"reader returned {len(block)} rows for rows {a}:{b}")
    return block


def _write_chunk(
    task: ChunkTask,
    store: str,
    store_options: dict[str, Any],
    source_options: dict[str, Any],
    keep_nonscience: bool,
    columns: dict[str, str],
    nwave: int,
    run_id: str,
) -> dict[str, Any]:
    """Read the pieces of one chunk and write the whole chunk (the job core records it).

    A piece whose file fails to decode (SourceError) is set aside: its rows keep
    targetid -1, flux = ivar = 0 and mask bit SET_ASIDE_MASK_BIT; the other pieces are written.
    """
    n = task.stop - task.start
    flux = np.zeros((n, nwave), np.float32)
    ivar = np.zeros((n, nwave), np.float32)
    mask = np.zeros((n, nwave), np.uint32)
    meta = _empty_columns(columns, n)
    n_bad = 0
    at = 0
    set_aside: list[dict[str, Any]] = []
    for url, a, b in task.pieces:
        m = b - a
        try:
            block = _read_piece(task, url, a, b, source_options, keep_nonscience)
        except SourceError as e:
            set_aside.append({"url": url, "reason": e.reason, "message": str(e)})
            mask[at : at + m] = np.uint32(1 << SET_ASIDE_MASK_BIT)
            if "source" in meta:
                meta["source"][at : at + m] = url
            at += m
            continue
        flux[at : at + m] = block.flux
        ivar[at : at + m] = block.ivar
        mask[at : at + m] = block.mask
        for k in columns:
            if k == "source":
                meta[k][at : at + m] = url
            elif k in block.meta:
                meta[k][at : at + m] = block.meta[k]
        n_bad += int(block.n_bad_pixels)
        at += m
    g = open_group(store, store_options)
    write_rows(g, task.start, {"flux": flux, "ivar": ivar, "mask": mask, **meta})
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


# -- planning --------------------------------------------------------------------------------


def _chunk_tasks(sources: pd.DataFrame, n_total: int, chunk: int) -> list[ChunkTask]:
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


def _job(config: IngestConfig) -> StoreJob:
    return StoreJob(config.store, config.store_storage_options(), kind="spectra", stage="ingest", job="ingest",
                    adopt_schema=SCHEMA_NAME, wait_lock=config.wait_lock)


def plan_ingest(config: IngestConfig, client) -> IngestPlan:
    """List and inspect sources, assign rows, create or grow the store (under the store's writer lock).

    Safe to repeat: a plan written by an interrupted run is picked up again.
    Raises :class:`~skybatch.store.identity.JobRefused` (foreign target, lock held).
    """
    with _job(config) as job:
        return _plan(config, client, job)


def _plan(config: IngestConfig, client, job: StoreJob) -> IngestPlan:
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    src_opts = config.source_storage_options()
    st_opts = config.store_storage_options()
    manifest = job.manifest

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
        grid, columns, chunk = None, None, config.chunk_spectra
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

    dups = duplicate_files(infos, planned.to_dict("records"), src_opts) if infos and config.dedupe_files else {}
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
                    extra_columns={k: v for k, v in (columns or {}).items() if k not in PER_SPECTRUM_COLUMNS},
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
        tasks = _chunk_tasks(sources, n_total, chunk)
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


# -- execution -------------------------------------------------------------------------------


def _provenance(plan: IngestPlan, st_opts: dict[str, Any]) -> dict[str, Any]:
    src = plan.sources
    digest = hashlib.sha256(
        json.dumps(src[["url", "size", "checksum", "n_rows", "spectrum_start"]].values.tolist(), default=str).encode()
    ).hexdigest()
    return {
        "n_sources": int(len(src)),
        "total_source_bytes": int(src["size"].sum()) if len(src) else 0,
        "sources_sha256": digest,
        "sources_table": "sources.parquet in the manifest (url, size, checksum, rows per source)",
        "source_examples": src["url"].head(5).tolist(),
        "skybatch_version": skybatch.__version__,
        "settings": plan.config.public_dict(),
        "store_options": public_options(st_opts),
        "last_run_id": plan.run_id,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def execute_plan(plan: IngestPlan, client) -> IngestReport:
    """Write every chunk the plan lists as to-do (one Dask task each), then update provenance.

    Takes the writer lock again; if another writer changed the store since the plan
    was made, the plan is made again first.
    """
    with _job(plan.config) as job:
        same = (job.identity or {}).get("uuid") == plan.store_uuid and \
            job.manifest.read_sources()["url"].tolist() == plan.sources["url"].tolist()
        if not same:
            print(f"note: {plan.config.store} changed since it was planned; planning again", file=sys.stderr)
            plan = _plan(plan.config, client, job)
        return _execute(plan, client, job)


def _execute(plan: IngestPlan, client, job: StoreJob) -> IngestReport:
    t0 = time.perf_counter()
    config = plan.config
    st_opts = config.store_storage_options()
    src_opts = config.source_storage_options()
    manifest = job.manifest
    failed: list[dict[str, Any]] = [{"chunk": None, "url": r["url"], "error": r["failed"]}
                                    for r in plan.failed_sources]
    written = 0
    n_bad = 0
    chunk_set_aside: list[dict[str, Any]] = []
    if plan.grid is not None and plan.todo:
        g = open_group(config.store, st_opts)
        columns = dict(g.attrs["per_spectrum_columns"])
        src = plan.sources
        needed = {u for t in plan.todo for u, _, _ in t.pieces}
        source_rows = {
            r["url"]: {"format": r["format"], "n_rows": int(r["n_rows"]), "rows": np.asarray(r["rows"], np.int64)}
            for r in src[src["url"].isin(needed)].to_dict("records")
        }
        for t in plan.todo:
            t.source_rows = {u: {**source_rows[u], "info": plan.infos.get(u)} for u, _, _ in t.pieces}
        out = run_chunks(
            client, plan.todo, _write_chunk, config.store, st_opts, src_opts, config.keep_nonscience,
            columns, plan.grid.n, plan.run_id, store=config.store, storage_options=st_opts, stage="ingest",
            key_prefix=f"ingest-chunk-{plan.run_id}", progress=config.progress, total_rows=plan.n_spectra,
            desc="ingest", retries=config.retries,
        )
        failed += out.failed
        written = out.rows_done
        n_bad = sum(int(r["n_bad_pixels"]) for r in out.records)
        chunk_set_aside = list({r["url"]: r for r in out.set_aside}.values())
        if chunk_set_aside:
            manifest.add_quarantine(chunk_set_aside, plan.run_id + "-write")
    n_dup, examples = 0, []
    if plan.grid is not None:
        g = open_group(config.store, st_opts)
        g.attrs["provenance"] = _provenance(plan, st_opts)
        g.attrs["formats"] = sorted(set(plan.formats.values()))
        consolidate(config.store, st_opts)
        if plan.n_spectra:
            n_dup, examples = duplicate_targets(g["targetid"][:], g["survey"][:], g["program"][:], g["source"][:])
    quarantined = manifest.quarantined().to_dict("records") if plan.grid is not None or plan.set_aside else []
    set_aside = {r["url"]: {k: r[k] for k in ("url", "reason", "message")} for r in quarantined}
    for r in chunk_set_aside:
        set_aside.setdefault(r["url"], r)
    return IngestReport(
        store=config.store, manifest=manifest.url, n_spectra=plan.n_spectra, spectra_written=written,
        chunks_written=len(plan.todo) - (len(failed) - len(plan.failed_sources)),
        chunks_skipped=plan.n_chunks - len(plan.todo),
        chunks_total=plan.n_chunks, new_sources=len(plan.new_sources), failed_chunks=failed,
        set_aside=list(set_aside.values()), n_bad_pixels=n_bad, seconds=time.perf_counter() - t0,
        run_id=plan.run_id, duplicate_targets=n_dup, duplicate_examples=examples,
    )


def run_with_client(config: IngestConfig, client) -> IngestReport:
    """Plan and execute an ingest on an existing Dask client, holding the store's lock throughout."""
    with _job(config) as job:
        return _execute(_plan(config, client, job), client, job)


def run(config: IngestConfig) -> IngestReport:
    """Plan and execute an ingest on a cluster started from ``config.cluster``."""
    from skybatch.cluster import cluster_client

    with cluster_client(config.cluster) as client:
        return run_with_client(config, client)


def ingest(
    sources: list[str] | str,
    store: str,
    format: str = "auto",
    chunk_spectra: int = 2048,
    client=None,
    **settings: Any,
) -> IngestReport:
    """Ingest survey FITS files into a spectra store; see :class:`IngestConfig` for settings.

    With ``client=None`` a cluster is started from ``settings.get("cluster", "auto")``.
    Returns an :class:`IngestReport` (spectra written, chunks, sources set aside).
    """
    config = IngestConfig(sources=sources, store=store, format=format, chunk_spectra=chunk_spectra, **settings)
    return run(config) if client is None else run_with_client(config, client)
