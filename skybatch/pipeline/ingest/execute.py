"""Executing an ingest plan: one Dask task per store chunk, then provenance; the public entry points."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from skybatch.pipeline.ingest.chunk import write_chunk
from skybatch.pipeline.ingest.config import IngestConfig, IngestPlan
from skybatch.pipeline.ingest.plan import ingest_job, plan_locked
from skybatch.pipeline.ingest.report import IngestReport
from skybatch.pipeline.ingest_checks import duplicate_targets
from skybatch.pipeline.jobcore import StoreJob, run_chunks
from skybatch.pipeline.sourcejob import run_on_cluster, source_provenance
from skybatch.store.spectra_store import consolidate, open_group

__all__ = ["execute_plan", "run", "run_with_client", "ingest"]


def _provenance(plan: IngestPlan, st_opts: dict[str, Any]) -> dict[str, Any]:
    return source_provenance(plan.sources, ["url", "size", "checksum", "n_rows", "spectrum_start"],
                             "sources.parquet in the manifest (url, size, checksum, rows per source)",
                             plan.config, plan.run_id, st_opts)


def execute_plan(plan: IngestPlan, client) -> IngestReport:
    """Write every chunk the plan lists as to-do (one Dask task each), then update provenance.

    Takes the writer lock again; if another writer changed the store since the plan
    was made, the plan is made again first.
    """
    with ingest_job(plan.config) as job:
        same = (job.identity or {}).get("uuid") == plan.store_uuid and \
            job.open_manifest().read_sources()["url"].tolist() == plan.sources["url"].tolist()
        if not same:
            print(f"note: {plan.config.store} changed since it was planned; planning again", file=sys.stderr)
            plan = plan_locked(plan.config, client, job)
        return _execute(plan, client, job)


def _execute(plan: IngestPlan, client, job: StoreJob) -> IngestReport:
    t0 = time.perf_counter()
    config = plan.config
    st_opts = config.store_storage_options()
    src_opts = config.source_storage_options()
    manifest = job.open_manifest()
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
            client, plan.todo, write_chunk, config.store, st_opts, src_opts, config.keep_nonscience,
            columns, plan.grid.n, plan.run_id, config.verify_checksums,
            store=config.store, storage_options=st_opts, stage="ingest",
            key_prefix=f"ingest-chunk-{plan.run_id}", progress=config.progress, total_rows=plan.n_spectra,
            desc="ingest", retries=config.retries,
        )
        failed += out.failed
        written = out.rows_done
        n_bad = sum(int(r["n_bad_pixels"]) for r in out.records)
        chunk_set_aside = list({r["url"]: r for r in out.set_aside}.values())
        if chunk_set_aside:
            manifest.add_quarantine(chunk_set_aside, plan.run_id + "-write")
    n_dup = 0
    examples: list[str] = []
    if plan.grid is not None:
        g = open_group(config.store, st_opts)
        g.attrs["provenance"] = _provenance(plan, st_opts)
        g.attrs["formats"] = sorted(set(plan.formats.values()))
        consolidate(config.store, st_opts)
        if plan.n_spectra:
            n_dup, examples = duplicate_targets(g["targetid"], g["survey"], g["program"], g["source"])
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
    with ingest_job(config) as job:
        return _execute(plan_locked(config, client, job), client, job)


def run(config: IngestConfig) -> IngestReport:
    """Plan and execute an ingest on the current Dask client, else on a cluster started from ``config.cluster``."""
    return run_on_cluster(run_with_client, config)


def ingest(
    sources: list[str] | str,
    store: str,
    format: str = "auto",
    chunk_spectra: int = 2048,
    client=None,
    **settings: Any,
) -> IngestReport:
    """Ingest survey FITS files into a spectra store; see :class:`IngestConfig` for settings.

    With ``client=None``: the current Dask client, else a cluster from ``settings.get("cluster", "auto")``.
    Returns an :class:`IngestReport` (spectra written, chunks, sources set aside).
    """
    config = IngestConfig(sources=[sources] if isinstance(sources, str) else list(sources), store=store, format=format, chunk_spectra=chunk_spectra, **settings)
    return run(config) if client is None else run_with_client(config, client)
