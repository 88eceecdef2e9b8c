"""skybatch: survey-scale astronomy batch processing.

FITS spectra and image tiles (local or S3) stream through a Dask cluster into
chunked Zarr stores; preprocessing, ZOGY differencing and JAX/Equinox models
are mapped across chunks; Prefect flows and the ``skybatch`` CLI drive it.

Top-level names are imported lazily (scientific-Python SPEC 1): ``import skybatch`` stays cheap, and
``skybatch/__init__.pyi`` tells IDEs and type checkers what each name is. Every job has a typed config,
a ``run_*`` function (``client=`` wins, else the current Dask client, else a cluster is started) and a
typed report; :mod:`skybatch.jobs` holds one module per job.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> "module:attribute"
_LAZY = {
    # Python entry points
    "ingest": "skybatch.jobs.entry:ingest",
    "preprocess": "skybatch.jobs.entry:preprocess",
    "map_model": "skybatch.jobs.entry:map_model",
    "ingest_tiles": "skybatch.jobs.entry:ingest_tiles",
    "difference": "skybatch.jobs.entry:difference",
    "open_store": "skybatch.store.spectra_store:open_store",
    "open_tile_store": "skybatch.store.tile_store:open_tile_store",
    "TileStore": "skybatch.store.tile_store:TileStore",
    "MapModelReport": "skybatch.pipeline.map_model:MapModelReport",
    # Dask
    "cluster_client": "skybatch.cluster:cluster_client",
    "current_client": "skybatch.cluster:current_client",
    # job configs
    "IngestConfig": "skybatch.jobs.ingest:Config",
    "TileIngestConfig": "skybatch.jobs.tile_ingest:Config",
    "PreprocessConfig": "skybatch.jobs.preprocess:Config",
    "DifferenceConfig": "skybatch.jobs.difference:Config",
    "TrainConfig": "skybatch.jobs.train:Config",
    "TileTrainConfig": "skybatch.jobs.tile_train:Config",
    "ScoreConfig": "skybatch.jobs.score:Config",
    "ClassifyConfig": "skybatch.jobs.classify:Config",
    "EmbedConfig": "skybatch.jobs.embed:Config",
    "TileEmbedConfig": "skybatch.jobs.tile_embed:Config",
    "RealBogusTrainConfig": "skybatch.jobs.realbogus:TrainConfig",
    # job reports
    "IngestReport": "skybatch.jobs.ingest:Report",
    "TileIngestReport": "skybatch.jobs.tile_ingest:Report",
    "PreprocessReport": "skybatch.jobs.preprocess:Report",
    "DifferenceReport": "skybatch.jobs.difference:Report",
    "TrainReport": "skybatch.jobs.train:Report",
    "TileTrainReport": "skybatch.jobs.tile_train:Report",
    "ScoreReport": "skybatch.jobs.score:Report",
    "ClassifyReport": "skybatch.jobs.classify:Report",
    "EmbedReport": "skybatch.jobs.embed:Report",
    "TileEmbedReport": "skybatch.jobs.tile_embed:Report",
    "RealBogusTrainReport": "skybatch.jobs.realbogus:TrainReport",
    # run(config, client=None) of each job
    "run_ingest": "skybatch.jobs.ingest:run",
    "run_ingest_tiles": "skybatch.jobs.tile_ingest:run",
    "run_preprocess": "skybatch.jobs.preprocess:run",
    "run_difference": "skybatch.jobs.difference:run",
    "run_train": "skybatch.jobs.train:run",
    "run_tile_train": "skybatch.jobs.tile_train:run",
    "run_score": "skybatch.jobs.score:run",
    "run_classify": "skybatch.jobs.classify:run",
    "run_embed": "skybatch.jobs.embed:run",
    "run_tile_embed": "skybatch.jobs.tile_embed:run",
    "run_realbogus_train": "skybatch.jobs.realbogus:run",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'skybatch' has no attribute {name!r}")
    mod, attr = target.split(":")
    value = getattr(importlib.import_module(mod), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
