"""Prefect flow: ingest image tiles (.npz / FITS) into a tile store (over :mod:`skybatch.jobs.tile_ingest`),
with the same coarse ingest and report tasks as the spectra ingest (:mod:`skybatch.orchestrate.ingest`).
"""

from __future__ import annotations

from skybatch.orchestrate._common import set_default_env

set_default_env()

from prefect import flow  # noqa: E402

from skybatch.jobs import tile_ingest as job  # noqa: E402
from skybatch.jobs.tile_ingest import Config  # noqa: E402
from skybatch.orchestrate._job_flow import JobFlow  # noqa: E402

_JOB = JobFlow.sources_job(job, "tile ingest", report_key="tile-ingest-report", where="tile_ingest_flow(config)")


@flow(name="skybatch-ingest-tiles", log_prints=True, validate_parameters=False)
def tile_ingest_flow(config: Config) -> dict:
    """Ingest Rubin / Euclid image tiles (.npz or FITS; paths, globs, s3:// URLs) into a Zarr tile store.

    ``config``: a :class:`skybatch.jobs.tile_ingest.Config` or a mapping of its settings."""
    return _JOB(config)
