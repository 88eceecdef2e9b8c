"""Prefect flow: ingest survey FITS files into a spectra store (wraps skybatch.pipeline.ingest).

Coarse tasks only (plan, ingest, report); the Dask work runs inside them on the
cluster's client, and Dask workers never talk to Prefect.
"""

from __future__ import annotations

from flows._common import check_deployment_paths, final_state, publish_report, retry_on_transient, set_default_env

set_default_env()

from dataclasses import asdict  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from skybatch.cluster import cluster_client  # noqa: E402
from skybatch.secrets import unstash  # noqa: E402
from skybatch.pipeline import ingest as job  # noqa: E402


@task(name="plan", retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE)
def plan(config: job.IngestConfig, client) -> job.IngestPlan:
    return job.plan_ingest(config, client)


@task(name="ingest", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE)
def write(p: job.IngestPlan, client) -> job.IngestReport:
    return job.execute_plan(p, client)


@task(name="report", cache_policy=NO_CACHE)
def report(r: job.IngestReport) -> job.IngestReport:
    get_run_logger().info(r.summary())
    publish_report("ingest-report", f"skybatch ingest into {r.store}", asdict(r))
    return r


@flow(name="skybatch-ingest", log_prints=True)
def ingest_flow(
    sources: list[str],
    store: str,
    format: str = "auto",
    chunk_spectra: int = 2048,
    keep_nonscience: bool = False,
    cluster: str = "auto",
    endpoint_url: str | None = None,
    anon: bool | None = None,
    source_options: dict | str | None = None,
    store_options: dict | str | None = None,
    retries: int = 3,
    progress: bool = True,
) -> dict:
    """Ingest DESI / SDSS / sky-VAC FITS files (paths, globs, s3:// URLs) into a Zarr spectra store.

    Paths must be absolute or ``s3://`` URLs when run as a deployment (a worker runs the flow in its own
    working directory). Ends Completed, "Completed with sources set aside" (with the counts), or Failed
    (chunks failed: re-run to retry); the report is published as a Markdown artifact."""
    check_deployment_paths(sources=sources, store=store)
    config = job.IngestConfig(
        sources=sources, store=store, format=format, chunk_spectra=chunk_spectra, keep_nonscience=keep_nonscience,
        cluster=cluster, endpoint_url=endpoint_url, anon=anon, progress=progress,
        source_options=unstash(source_options) or {}, store_options=unstash(store_options) or {}, retries=retries,
    )
    with cluster_client(config.cluster) as client:
        p = plan(config, client)
        r = write(p, client)
    report(r)
    return final_state(asdict(r), r.exit_code, "ingest")
