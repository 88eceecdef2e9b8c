"""The preprocess job: typed config, ``run(cfg)`` / ``run_with_client(cfg, client)`` and its report.

The config and report are :mod:`skybatch.pipeline.preprocess`'s own classes (re-exported here, not copied).
"""

from __future__ import annotations

from typing import Any

from skybatch.jobs._core import run_job
from skybatch.pipeline.preprocess import PreprocessConfig as Config
from skybatch.pipeline.preprocess import PreprocessReport as Report

__all__ = ["Config", "Report", "run", "run_with_client"]

#: the ``skybatch run`` subcommand of this job
COMMAND = "preprocess"


def run_with_client(cfg: Config, client: Any) -> Report:
    """Run the preprocess on an existing Dask client (the store's writer lock is held throughout)."""
    from skybatch.pipeline.preprocess import run_with_client as _run

    return _run(cfg, client)


def run(cfg: Config, client: Any = None) -> Report:
    """Run the preprocess on ``client``, else the current Dask client, else a cluster from ``cfg.cluster``."""
    return run_job(run_with_client, cfg, client)
