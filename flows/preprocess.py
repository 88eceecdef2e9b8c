"""Prefect flow: preprocess a spectra store into a model-ready store (wraps skybatch.pipeline.preprocess)."""

from __future__ import annotations

from flows._common import check_deployment_paths, final_state, publish_report, retry_on_transient, set_default_env

set_default_env()

from dataclasses import asdict  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from skybatch.cluster import cluster_client  # noqa: E402
from skybatch.pipeline import preprocess as job  # noqa: E402
from skybatch.spectra import PreprocessRecipe  # noqa: E402


@task(name="preprocess", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_on_transient,
      cache_policy=NO_CACHE)
def run_preprocess(config: job.PreprocessConfig, client) -> job.PreprocessReport:
    return job.run_with_client(config, client)


@task(name="report", cache_policy=NO_CACHE)
def report(r: job.PreprocessReport) -> None:
    get_run_logger().info(r.summary())
    publish_report("preprocess-report", f"skybatch preprocess {r.store} -> {r.out}", asdict(r))


@flow(name="skybatch-preprocess", log_prints=True)
def preprocess_flow(store: str, out: str, recipe: dict | None = None, device: str = "auto", cluster: str = "auto",
                    endpoint_url: str | None = None, anon: bool | None = None, progress: bool = True) -> dict:
    """Mask, shift to the rest frame, resample and normalise every spectrum of a store into a new store."""
    check_deployment_paths(store=store, out=out)
    config = job.PreprocessConfig(store=store, out=out, recipe=PreprocessRecipe.from_dict(recipe or {}),
                                  device=device, cluster=cluster, endpoint_url=endpoint_url, anon=anon,
                                  progress=progress)
    with cluster_client(config.cluster) as client:
        r = run_preprocess(config, client)
    report(r)
    return final_state(asdict(r), r.exit_code, "preprocess")
