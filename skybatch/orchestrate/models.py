"""Prefect flows for the model jobs: train (spectral, tile encoder) and score / classify / embed (over
:mod:`skybatch.jobs.train`, :mod:`~skybatch.jobs.tile_train`, :mod:`~skybatch.jobs.score`,
:mod:`~skybatch.jobs.classify`, :mod:`~skybatch.jobs.embed`).

One coarse Prefect task per job; the Dask work (batch reading, model mapping) runs inside it through the
cluster's client.
"""

from __future__ import annotations

from skybatch.orchestrate._common import TASK_RETRY, check_deployment_paths, job_config, set_default_env

set_default_env()

from dataclasses import asdict  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from skybatch.cluster import cluster_client  # noqa: E402
from skybatch.jobs import classify, embed, score, tile_train, train  # noqa: E402



_JOBS: dict[str, Any] = {"train": train, "tile_train": tile_train, "score": score, "classify": classify,
                         "embed": embed}


def _run_job(job: str, config: Any, client) -> Any:
    # a retried training resumes from the newest checkpoint in config.out
    return _JOBS[job].run_with_client(config, client)


#: One coarse retried Prefect task per job kind, all over :func:`_run_job` (``task(job, config, client)``).
train_task = task(name="train", cache_policy=NO_CACHE, **TASK_RETRY)(_run_job)
tile_train_task = train_task.with_options(name="train-tile-encoder")
apply_task = train_task.with_options(name="map-model")


def _run(job: str, task: Any, config: Any, paths: tuple[str, ...]) -> Any:
    """The job's task for the flow parameter ``config`` (a config or a mapping of its settings) on a cluster
    started from ``config.cluster``; its report. ``paths``: the config's settings that name paths (checked
    in a deployment)."""
    config = job_config(_JOBS[job].Config, config, f"{job}_flow(config)")
    check_deployment_paths(**{k: getattr(config, k) for k in paths})
    with cluster_client(config.cluster) as client:
        return task(job, config, client)


@flow(name="skybatch-train", log_prints=True, validate_parameters=False)
def train_flow(config: train.Config) -> dict:
    """Train a spectral model (vae | classifier) on a store, streaming shuffled chunks; resumable.

    ``config``: a :class:`skybatch.jobs.train.Config` or a mapping of its settings."""
    r = _run("train", train_task, config, ("store", "out"))
    get_run_logger().info(r.summary())
    return asdict(r)


@flow(name="skybatch-train-tile-encoder", log_prints=True, validate_parameters=False)
def tile_train_flow(config: tile_train.Config) -> dict:
    """Train the band-agnostic tile encoder (cross-band JEPA + VICReg) on a tile store; resumable.

    ``config``: a :class:`skybatch.jobs.tile_train.Config` or a mapping of its settings."""
    return _run("tile_train", tile_train_task, config, ("store", "out")).to_dict()


def _apply(job: str, config: Any) -> dict:
    return _run(job, apply_task, config, ("store", "model")).to_dict()


@flow(name="skybatch-score", log_prints=True, validate_parameters=False)
def score_flow(config: score.Config) -> dict:
    """Write anomaly scores (a VAE) or sky predictions (a sky model) into a store, and the top-K catalogue.

    ``config``: a :class:`skybatch.jobs.score.Config` or a mapping of its settings."""
    return _apply("score", config)


@flow(name="skybatch-classify", log_prints=True, validate_parameters=False)
def classify_flow(config: classify.Config) -> dict:
    """Write calibrated class probabilities (a spectral classifier) or real/bogus scores (a realbogus
    model on a difference store). ``config``: a :class:`skybatch.jobs.classify.Config` or a mapping."""
    return _apply("classify", config)


@flow(name="skybatch-embed", log_prints=True, validate_parameters=False)
def embed_flow(config: embed.Config) -> dict:
    """Write embeddings: a VAE's latent mean per spectrum, or a tile encoder's per-tile, per-band vectors.
    ``config``: a :class:`skybatch.jobs.embed.Config` or a mapping of its settings."""
    return _apply("embed", config)
