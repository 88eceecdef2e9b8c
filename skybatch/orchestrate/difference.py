"""Prefect flow: ZOGY difference imaging of science/reference pairs (over :mod:`skybatch.jobs.difference`).

Coarse tasks only (difference, report); the Dask work (one task per pair or sub-tile, then the catalogue
and cutouts) runs inside them on the cluster's client, and Dask workers never talk to Prefect.
"""

from __future__ import annotations

from skybatch.orchestrate._common import TASK_RETRY, check_deployment_paths, job_config, set_default_env

set_default_env()

from dataclasses import asdict  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from skybatch.cluster import cluster_client  # noqa: E402
from skybatch.jobs.difference import Config, Report, run_with_client  # noqa: E402


@task(name="difference", cache_policy=NO_CACHE, **TASK_RETRY)
def run_difference(config: Config, client) -> Report:
    # a retry plans again: pairs finished by the failed attempt are skipped (the job is resumable)
    return run_with_client(config, client)


@task(name="report", cache_policy=NO_CACHE)
def report(r: Report) -> Report:
    log = get_run_logger()
    log.info(r.summary())
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact("```\n" + r.summary() + "\n```", key="difference-report",
                                 description="skybatch ZOGY difference imaging")
    except Exception as e:  # artifacts are a courtesy; never fail the run for one
        log.warning(f"could not create the report artifact: {e}")
    return r


@flow(name="skybatch-difference", log_prints=True, validate_parameters=False)
def difference_flow(config: Config) -> dict:
    """Difference science images against references (FITS / .npz files or tile stores) with ZOGY into a
    Zarr difference store, with a Parquet candidate catalogue, cutout triplets and (with inject > 0)
    an injection-recovery report.

    ``config``: a :class:`skybatch.jobs.difference.Config` or a mapping of its settings."""
    value: Any = config
    if isinstance(value, dict) and isinstance(value.get("inject_snr"), list):
        value = {**value, "inject_snr": tuple(value["inject_snr"])}
    config = job_config(Config, value, "difference_flow(config)")
    check_deployment_paths(science=config.science, reference=config.reference, out=config.out)
    with cluster_client(config.cluster) as client:
        r = run_difference(config, client)
    report(r)
    return asdict(r)
