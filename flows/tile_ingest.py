"""Prefect flow: ingest image tiles (.npz / FITS) into a tile store (wraps skybatch.pipeline.tile_ingest).

Coarse tasks only (plan, ingest, report); the Dask work runs inside them on the cluster's
client, and Dask workers never talk to Prefect.
"""

from __future__ import annotations

from flows._common import check_deployment_paths, final_state, publish_report, retry_on_transient, set_default_env

set_default_env()

from dataclasses import asdict  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from skybatch.cluster import cluster_client  # noqa: E402
from skybatch.secrets import unstash  # noqa: E402
from skybatch.pipeline import tile_ingest as job  # noqa: E402


@task(name="plan", retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=retry_on_transient,
      cache_policy=NO_CACHE)
def plan(config: job.TileIngestConfig, client) -> job.TileIngestPlan:
    return job.plan_tile_ingest(config, client)


@task(name="ingest", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_on_transient,
      cache_policy=NO_CACHE)
def write(p: job.TileIngestPlan, client) -> job.TileIngestReport:
    return job.execute_tile_plan(p, client)


@task(name="report", cache_policy=NO_CACHE)
def report(r: job.TileIngestReport) -> job.TileIngestReport:
    get_run_logger().info(r.summary())
    publish_report("tile-ingest-report", f"skybatch tile ingest into {r.store}", asdict(r))
    return r


@flow(name="skybatch-ingest-tiles", log_prints=True)
def tile_ingest_flow(
    sources: list[str],
    store: str,
    chunk_tiles: int = 4,
    instrument: str | None = None,
    tile_pattern: str | None = None,
    shard_planes: bool | None = None,
    cluster: str = "auto",
    endpoint_url: str | None = None,
    anon: bool | None = None,
    source_options: dict | str | None = None,
    store_options: dict | str | None = None,
    retries: int = 3,
    progress: bool = True,
) -> dict:
    """Ingest Rubin / Euclid image tiles (.npz or FITS; paths, globs, s3:// URLs) into a Zarr tile store."""
    check_deployment_paths(sources=sources, store=store)
    config = job.TileIngestConfig(
        sources=sources, store=store, chunk_tiles=chunk_tiles, instrument=instrument, tile_pattern=tile_pattern,
        shard_planes=shard_planes, cluster=cluster, endpoint_url=endpoint_url, anon=anon, progress=progress,
        source_options=unstash(source_options) or {}, store_options=unstash(store_options) or {}, retries=retries,
    )
    with cluster_client(config.cluster) as client:
        p = plan(config, client)
        r = write(p, client)
    report(r)
    return final_state(asdict(r), r.exit_code, "tile ingest")
