"""Prefect flow: ingest survey FITS files into a spectra store (over :mod:`skybatch.jobs.ingest`).

Coarse tasks only (plan, ingest, report); the Dask work runs inside them on the cluster's
client, and Dask workers never talk to Prefect.
"""

from __future__ import annotations

from skybatch.orchestrate._common import (
    check_deployment_paths,
    final_state,
    job_config,
    publish_report,
    retry_on_transient,
    set_default_env,
)

set_default_env()

from dataclasses import asdict  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from skybatch.cluster import cluster_client  # noqa: E402
from skybatch.jobs.ingest import Config, Report, run_with_client  # noqa: E402


@task(name="ingest", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_on_transient,
      cache_policy=NO_CACHE)
def run_ingest(config: Config, client) -> Report:
    # a retry plans again: chunks written by the failed attempt are skipped (the job is resumable)
    return run_with_client(config, client)


@task(name="report", cache_policy=NO_CACHE)
def report(r: Report) -> Report:
    get_run_logger().info(r.summary())
    publish_report("ingest-report", f"skybatch ingest into {r.store}", asdict(r))
    return r


@flow(name="skybatch-ingest", log_prints=True, validate_parameters=False)
def ingest_flow(config: Config) -> dict:
    """Ingest DESI / SDSS / sky-VAC FITS files (paths, globs, s3:// URLs) into a Zarr spectra store.

    ``config``: an :class:`skybatch.jobs.ingest.Config` or a mapping of its settings. Paths must
    be absolute or ``s3://`` URLs when run as a deployment (a worker runs the flow in its own working
    directory). Ends Completed, "Completed with sources set aside" (with the counts), or Failed
    (chunks failed: re-run to retry); the report is published as a Markdown artifact."""
    config = job_config(Config, config, "ingest_flow(config)")
    check_deployment_paths(sources=config.sources, store=config.store)
    with cluster_client(config.cluster) as client:
        r = run_ingest(config, client)
    report(r)
    return final_state(asdict(r), r.exit_code, "ingest")
