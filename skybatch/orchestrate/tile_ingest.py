"""Prefect flow: ingest image tiles (.npz / FITS) into a tile store (over :mod:`skybatch.jobs.tile_ingest`).

Coarse tasks only (ingest, report; :mod:`._job_flow`); the Dask work runs inside them on the cluster's
client, and Dask workers never talk to Prefect.
"""

from __future__ import annotations

from skybatch.orchestrate._common import set_default_env

set_default_env()

from prefect import flow  # noqa: E402

from skybatch.jobs.tile_ingest import Config, run_with_client  # noqa: E402
from skybatch.orchestrate._job_flow import JobFlow  # noqa: E402

_JOB = JobFlow(Config, run_with_client, task_name="ingest", what="tile ingest", report_key="tile-ingest-report",
               title=lambda r: f"skybatch tile ingest into {r.store}",
               paths=lambda c: dict(sources=c.sources, store=c.store), where="tile_ingest_flow(config)")


@flow(name="skybatch-ingest-tiles", log_prints=True, validate_parameters=False)
def tile_ingest_flow(config: Config) -> dict:
    """Ingest Rubin / Euclid image tiles (.npz or FITS; paths, globs, s3:// URLs) into a Zarr tile store.

    ``config``: a :class:`skybatch.jobs.tile_ingest.Config` or a mapping of its settings."""
    return _JOB(config)
