"""Prefect flows for the model jobs: train, score, classify, embed (wrap skybatch.pipeline.modeling).

One coarse Prefect task per job; the Dask work (batch reading, model mapping) runs inside it through the
cluster's client.
"""

from __future__ import annotations

from flows._common import retry_on_transient, set_default_env

set_default_env()

from dataclasses import asdict  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from skybatch.cluster import cluster_client  # noqa: E402
from skybatch.pipeline import modeling as job  # noqa: E402

_RETRY = dict(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE)


@task(name="train", **_RETRY)
def train_task(config: job.TrainJobConfig, client) -> job.TrainJobReport:
    # a retry resumes from the newest checkpoint in config.out
    return job.train(config, client)


@task(name="map-model", **_RETRY)
def map_task(kind: str, store: str, model: str, client, top: int, batch_size: int, progress: bool,
             select: list[str] | None = None, method: str = "vae") -> dict:
    if kind == "score" and _card_kind(model) == "sky_broadband":
        from skybatch.pipeline.sky_broadband import predict_broadband

        return predict_broadband(store, model, client, batch_size=batch_size, progress=progress)
    if kind == "score":
        return job.score(store, model, top=top, client=client, batch_size=batch_size, progress=progress,
                         select=select, method=method)
    if kind == "classify":
        return job.classify(store, model, client=client, batch_size=batch_size, progress=progress)
    if _is_tile_model(model):
        from skybatch.pipeline.tile_model import embed_tiles_store

        return embed_tiles_store(store, model, client, progress=progress)
    return job.embed(store, model, client=client, batch_size=batch_size, progress=progress)


def _card_kind(model_dir: str) -> str:
    import os

    from skybatch.models import read_card

    path = model_dir if os.path.exists(os.path.join(model_dir, "card.json")) else os.path.join(model_dir, "model")
    try:
        return str(read_card(path).get("kind", ""))
    except Exception:  # let the job itself report a missing or broken model
        return ""


def _is_tile_model(model_dir: str) -> bool:
    return _card_kind(model_dir).startswith("tile")


@task(name="train-tile-encoder", **_RETRY)
def tile_train_task(config, client) -> dict:
    from skybatch.pipeline.tile_model import train_tile_encoder

    return train_tile_encoder(config, client)


@flow(name="skybatch-train-tile-encoder", log_prints=True)
def tile_train_flow(store: str, out: str, settings: dict | None = None, cluster: str = "auto",
                    progress: bool = True) -> dict:
    """Train the band-agnostic tile encoder (cross-band JEPA + VICReg) on a tile store; resumable."""
    from skybatch.pipeline.tile_model import TileTrainConfig

    config = TileTrainConfig(store=store, out=out, cluster=cluster, progress=progress, **(settings or {}))
    with cluster_client(config.cluster) as client:
        return tile_train_task(config, client)


@flow(name="skybatch-train", log_prints=True)
def train_flow(store: str, model: str, out: str, settings: dict | None = None, cluster: str = "auto",
               progress: bool = True) -> dict:
    """Train a spectral model (vae | classifier) on a store, streaming shuffled chunks; resumable."""
    from flows._common import check_deployment_paths

    check_deployment_paths(store=store, out=out)
    from skybatch.secrets import unstash

    settings = dict(settings or {})
    if "storage_options" in settings:
        settings["storage_options"] = unstash(settings["storage_options"])
    config = job.TrainJobConfig(store=store, model=model, out=out, cluster=cluster, progress=progress, **settings)
    with cluster_client(config.cluster) as client:
        r = train_task(config, client)
    get_run_logger().info(r.summary())
    return asdict(r)


@flow(name="skybatch-apply-model", log_prints=True)
def apply_flow(kind: str, store: str, model: str, cluster: str = "auto", top: int = 100, batch_size: int = 1024,
               progress: bool = True, select: list[str] | None = None, method: str = "vae") -> dict:
    """Map a saved model over a store: kind = score (anomaly_score) | classify (class_prob) | embed (embedding).

    ``select`` (score only): rank only the matching spectra, e.g. ``["spectype=QSO"]``; ``method`` (score
    only): ``vae`` or ``population`` (see :func:`skybatch.pipeline.modeling.score`).
    """
    from flows._common import check_deployment_paths

    check_deployment_paths(store=store, model=model)
    if kind not in ("score", "classify", "embed"):
        raise ValueError(f"kind: {kind!r} is not one of ('score', 'classify', 'embed')")
    with cluster_client(cluster) as client:
        return map_task(kind, store, model, client, top, batch_size, progress, select, method)
