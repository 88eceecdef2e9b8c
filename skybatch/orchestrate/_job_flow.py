"""The one flow body of the store-writing jobs (ingest, tile ingest, preprocess): config from the flow's
parameter, deployment path check, the job's ``run_with_client`` as one coarse retried Prefect task on the
cluster's client, the report as a Markdown artifact, and a final state that says what happened.

Imports Prefect: import it after :func:`skybatch.orchestrate._common.set_default_env`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from skybatch.cluster import cluster_client
from skybatch.orchestrate._common import TASK_RETRY, check_deployment_paths, final_state, job_config, publish_report


@dataclass(frozen=True)
class JobFlow:
    """How one job runs as a flow.

    ``config_cls``/``run_with_client``: the job's config class and entry point; ``task_name``: the name of
    its Prefect task; ``what``: the job in the final state's message (e.g. ``"tile ingest"``);
    ``report_key``: the artifact's key; ``title(report)``: the artifact's title; ``paths(config)``: the
    config's paths checked in a deployment (name -> path or list of paths); ``where``: the flow's call in
    error messages; ``coerce``: turns the flow parameter's nested mappings into objects before the config
    is built (``None``: none)."""

    config_cls: type
    run_with_client: Callable[[Any, Any], Any]
    task_name: str
    what: str
    report_key: str
    title: Callable[[Any], str]
    paths: Callable[[Any], dict[str, Any]]
    where: str
    coerce: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        run = self.run_with_client

        def run_job(config: Any, client: Any) -> Any:
            # a retry plans again: chunks written by the failed attempt are skipped (the job is resumable)
            return run(config, client)

        def report(r: Any) -> Any:
            get_run_logger().info(r.summary())
            publish_report(self.report_key, self.title(r), asdict(r))
            return r

        object.__setattr__(self, "_run_task", task(name=self.task_name, cache_policy=NO_CACHE,
                                                    **TASK_RETRY)(run_job))
        object.__setattr__(self, "_report_task", task(name="report", cache_policy=NO_CACHE)(report))

    @classmethod
    def sources_job(cls, job: Any, what: str, report_key: str, where: str) -> JobFlow:
        """The flow of a job module (``Config``, ``run_with_client``) that reads ``config.sources`` into
        ``config.store`` (ingest, tile ingest): its task is ``ingest``, its artifact is titled ``skybatch
        WHAT into STORE``, and its sources and store are the paths checked in a deployment."""
        return cls(job.Config, job.run_with_client, task_name="ingest", what=what, report_key=report_key,
                   title=lambda r: f"skybatch {what} into {r.store}",
                   paths=lambda c: dict(sources=c.sources, store=c.store), where=where)

    @property
    def run_task(self) -> Any:
        """The job as one retried Prefect task, called ``run_task(config, client)`` inside a flow (the
        quick start runs ingest this way inside its own flow, on its own client)."""
        return self._run_task  # type: ignore[attr-defined]

    @property
    def report_task(self) -> Any:
        """The Prefect task ``report_task(report)``: logs the summary and publishes the Markdown artifact."""
        return self._report_task  # type: ignore[attr-defined]

    def __call__(self, value: Any) -> dict:
        """Run the job for the flow parameter ``value`` (a config or a mapping of its settings) inside the
        current flow run; returns the final state, whose data is the report as a dict."""
        if self.coerce is not None:
            value = self.coerce(value)
        config = job_config(self.config_cls, value, self.where)
        check_deployment_paths(**self.paths(config))
        with cluster_client(config.cluster) as client:
            r = self.run_task(config, client)
        self.report_task(r)
        return final_state(asdict(r), r.exit_code, self.what)
