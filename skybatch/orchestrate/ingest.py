"""Prefect flow: ingest survey FITS files into a spectra store (over :mod:`skybatch.jobs.ingest`).

Coarse tasks only (ingest, report; :mod:`._job_flow`); the Dask work runs inside them on the cluster's
client, and Dask workers never talk to Prefect.
"""

from __future__ import annotations

from skybatch.orchestrate._common import set_default_env

set_default_env()

from prefect import flow  # noqa: E402

from skybatch.jobs import ingest as job  # noqa: E402
from skybatch.jobs.ingest import Config  # noqa: E402
from skybatch.orchestrate._job_flow import JobFlow  # noqa: E402

_JOB = JobFlow.sources_job(job, "ingest", report_key="ingest-report", where="ingest_flow(config)")

#: The ingest as one retried Prefect task (``run_ingest(config, client)``) and its report task, for flows
#: that run an ingest among other steps (the quick start).
run_ingest = _JOB.run_task
report = _JOB.report_task


@flow(name="skybatch-ingest", log_prints=True, validate_parameters=False)
def ingest_flow(config: Config) -> dict:
    """Ingest DESI / SDSS / sky-VAC FITS files (paths, globs, s3:// URLs) into a Zarr spectra store.

    ``config``: an :class:`skybatch.jobs.ingest.Config` or a mapping of its settings. Paths must
    be absolute or ``s3://`` URLs when run as a deployment (a worker runs the flow in its own working
    directory). Ends Completed, "Completed with sources set aside" (with the counts), or Failed
    (chunks failed: re-run to retry); the report is published as a Markdown artifact."""
    return _JOB(config)
