"""Prefect flow: ingest image tiles (.npz / FITS) into a tile store (over :mod:`skybatch.jobs.tile_ingest`).

Coarse tasks only (ingest, report); the Dask work runs inside them on the cluster's client, and Dask
workers never talk to Prefect.
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
from skybatch.jobs.tile_ingest import Config, Report, run_with_client  # noqa: E402


@task(name="ingest", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_on_transient,
      cache_policy=NO_CACHE)
def run_tile_ingest(config: Config, client) -> Report:
    # a retry plans again: chunks written by the failed attempt are skipped (the job is resumable)
    return run_with_client(config, client)


@task(name="report", cache_policy=NO_CACHE)
def report(r: Report) -> Report:
    get_run_logger().info(r.summary())
    publish_report("tile-ingest-report", f"skybatch tile ingest into {r.store}", asdict(r))
    return r


@flow(name="skybatch-ingest-tiles", log_prints=True, validate_parameters=False)
def tile_ingest_flow(config: Config) -> dict:
    """Ingest Rubin / Euclid image tiles (.npz or FITS; paths, globs, s3:// URLs) into a Zarr tile store.

    ``config``: a :class:`skybatch.jobs.tile_ingest.Config` or a mapping of its settings."""
    config = job_config(Config, config, "tile_ingest_flow(config)")
    check_deployment_paths(sources=config.sources, store=config.store)
    with cluster_client(config.cluster) as client:
        r = run_tile_ingest(config, client)
    report(r)
    return final_state(asdict(r), r.exit_code, "tile ingest")
