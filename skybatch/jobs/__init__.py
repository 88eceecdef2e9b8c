"""One module per job: its typed ``Config``, ``run(cfg, client=None)``, ``run_with_client(cfg, client)`` and
its ``Report``.

``run`` uses the ``client`` given, else the current Dask client (``with Client(...):``), else starts a
cluster from ``cfg.cluster`` and closes it at the end. The Prefect flows
(:mod:`skybatch.orchestrate`) and the CLI call the same ``run_with_client``. Model kinds (what
``--model`` trains and which jobs apply a trained model) are in :mod:`skybatch.jobs.kinds`.

Importing this package imports no job (each job module imports its pipeline module).
"""

from __future__ import annotations

#: job name -> module in this package
JOBS = {
    "ingest": "skybatch.jobs.ingest",
    "tile_ingest": "skybatch.jobs.tile_ingest",
    "preprocess": "skybatch.jobs.preprocess",
    "difference": "skybatch.jobs.difference",
    "train": "skybatch.jobs.train",
    "score": "skybatch.jobs.score",
    "classify": "skybatch.jobs.classify",
    "embed": "skybatch.jobs.embed",
    "tile_train": "skybatch.jobs.tile_train",
    "tile_embed": "skybatch.jobs.tile_embed",
    "sky_train": "skybatch.jobs.sky_train",
    "realbogus": "skybatch.jobs.realbogus",
}

__all__ = ["JOBS"]
