"""Prefect flow: preprocess a spectra store into a model-ready store (over :mod:`skybatch.jobs.preprocess`)."""

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
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from skybatch.cluster import cluster_client  # noqa: E402
from skybatch.jobs.preprocess import Config, Report, run_with_client  # noqa: E402
from skybatch.spectra import PreprocessRecipe  # noqa: E402


@task(name="preprocess", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_on_transient,
      cache_policy=NO_CACHE)
def run_preprocess(config: Config, client) -> Report:
    return run_with_client(config, client)


@task(name="report", cache_policy=NO_CACHE)
def report(r: Report) -> None:
    get_run_logger().info(r.summary())
    publish_report("preprocess-report", f"skybatch preprocess {r.store} -> {r.out}", asdict(r))


@flow(name="skybatch-preprocess", log_prints=True, validate_parameters=False)
def preprocess_flow(config: Config) -> dict:
    """Mask, shift to the rest frame, resample and normalise every spectrum of a store into a new store.

    ``config``: a :class:`skybatch.jobs.preprocess.Config` or a mapping of its settings (``recipe``: a
    :class:`~skybatch.spectra.PreprocessRecipe` or a mapping of its settings)."""
    value: Any = config
    if isinstance(value, dict) and isinstance(value.get("recipe"), dict):
        value = {**value, "recipe": PreprocessRecipe.from_dict(value["recipe"])}
    config = job_config(Config, value, "preprocess_flow(config)")
    check_deployment_paths(store=config.store, out=config.out)
    with cluster_client(config.cluster) as client:
        r = run_preprocess(config, client)
    report(r)
    return final_state(asdict(r), r.exit_code, "preprocess")
