"""Prefect flows for the model jobs: train (spectral, tile encoder) and score / classify / embed (over
:mod:`skybatch.jobs.train`, :mod:`~skybatch.jobs.tile_train`, :mod:`~skybatch.jobs.score`,
:mod:`~skybatch.jobs.classify`, :mod:`~skybatch.jobs.embed`).

One coarse Prefect task per job; the Dask work (batch reading, model mapping) runs inside it through the
cluster's client.
"""

from __future__ import annotations

from skybatch.orchestrate._common import check_deployment_paths, job_config, retry_on_transient, set_default_env

set_default_env()

from dataclasses import asdict  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from skybatch.cluster import cluster_client  # noqa: E402
from skybatch.jobs import classify, embed, score, tile_train, train  # noqa: E402

_RETRY: dict[str, Any] = dict(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_on_transient,
                              cache_policy=NO_CACHE)


def _train(config_cls: type, train_task: Any, config: Any, where: str) -> Any:
    """The training task for the flow parameter ``config`` (a config or a mapping of its settings) on a
    cluster started from ``config.cluster``; its report."""
    config = job_config(config_cls, config, where)
    check_deployment_paths(store=config.store, out=config.out)
    with cluster_client(config.cluster) as client:
        return train_task(config, client)


@task(name="train", **_RETRY)
def train_task(config: train.Config, client) -> train.Report:
    # a retry resumes from the newest checkpoint in config.out
    return train.run_with_client(config, client)


@flow(name="skybatch-train", log_prints=True, validate_parameters=False)
def train_flow(config: train.Config) -> dict:
    """Train a spectral model (vae | classifier) on a store, streaming shuffled chunks; resumable.

    ``config``: a :class:`skybatch.jobs.train.Config` or a mapping of its settings."""
    r = _train(train.Config, train_task, config, "train_flow(config)")
    get_run_logger().info(r.summary())
    return asdict(r)


@task(name="train-tile-encoder", **_RETRY)
def tile_train_task(config: tile_train.Config, client) -> tile_train.Report:
    return tile_train.run_with_client(config, client)


@flow(name="skybatch-train-tile-encoder", log_prints=True, validate_parameters=False)
def tile_train_flow(config: tile_train.Config) -> dict:
    """Train the band-agnostic tile encoder (cross-band JEPA + VICReg) on a tile store; resumable.

    ``config``: a :class:`skybatch.jobs.tile_train.Config` or a mapping of its settings."""
    return _train(tile_train.Config, tile_train_task, config, "tile_train_flow(config)").to_dict()


@task(name="map-model", **_RETRY)
def apply_task(job: str, config: Any, client) -> Any:
    return {"score": score, "classify": classify, "embed": embed}[job].run_with_client(config, client)


def _apply(job: str, module: Any, config: Any) -> dict:
    config = job_config(module.Config, config, f"{job}_flow(config)")
    check_deployment_paths(store=config.store, model=config.model)
    with cluster_client(config.cluster) as client:
        report: Any = apply_task(job, config, client)
        return report.to_dict()


@flow(name="skybatch-score", log_prints=True, validate_parameters=False)
def score_flow(config: score.Config) -> dict:
    """Write anomaly scores (a VAE) or sky predictions (a sky model) into a store, and the top-K catalogue.

    ``config``: a :class:`skybatch.jobs.score.Config` or a mapping of its settings."""
    return _apply("score", score, config)


@flow(name="skybatch-classify", log_prints=True, validate_parameters=False)
def classify_flow(config: classify.Config) -> dict:
    """Write calibrated class probabilities (a spectral classifier) or real/bogus scores (a realbogus
    model on a difference store). ``config``: a :class:`skybatch.jobs.classify.Config` or a mapping."""
    return _apply("classify", classify, config)


@flow(name="skybatch-embed", log_prints=True, validate_parameters=False)
def embed_flow(config: embed.Config) -> dict:
    """Write embeddings: a VAE's latent mean per spectrum, or a tile encoder's per-tile, per-band vectors.
    ``config``: a :class:`skybatch.jobs.embed.Config` or a mapping of its settings."""
    return _apply("embed", embed, config)
