"""skybatch: survey-scale astronomy batch processing.

FITS spectra and image tiles (local or S3) stream through a Dask cluster into
chunked Zarr stores; preprocessing, ZOGY differencing and JAX/Equinox models
are mapped across chunks; Prefect flows and the ``skybatch`` CLI drive it.

Top-level entry points are imported lazily so ``import skybatch`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> "module:attribute"
_LAZY = {
    "ingest": "skybatch.pipeline.ingest:ingest",
    "IngestConfig": "skybatch.pipeline.ingest:IngestConfig",
    "IngestReport": "skybatch.pipeline.ingest:IngestReport",
    "preprocess": "skybatch.pipeline.preprocess:preprocess",
    "map_model": "skybatch.pipeline.map_model:map_model",
    "ingest_tiles": "skybatch.pipeline.tile_ingest:ingest_tiles",
    "TileIngestConfig": "skybatch.pipeline.tile_ingest:TileIngestConfig",
    "open_tile_store": "skybatch.store.tile_store:open_tile_store",
    "TileStore": "skybatch.store.tile_store:TileStore",
    "difference": "skybatch.pipeline.difference:difference",
    "open_store": "skybatch.store.spectra_store:open_store",
    "cluster_client": "skybatch.cluster:cluster_client",
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
