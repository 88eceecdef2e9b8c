"""The spectral training job (``--model vae | classifier``): config, ``run`` / ``run_with_client``, report.

Other ``--model`` kinds train through their own job modules; :mod:`skybatch.jobs.kinds` says which.
"""

from __future__ import annotations

from typing import Any

from skybatch.jobs._core import run_job
from skybatch.pipeline.modeling import TrainJobConfig as Config
from skybatch.pipeline.modeling import TrainJobReport as Report

__all__ = ["Config", "Report", "run", "run_with_client"]

COMMAND = "train"


def run_with_client(cfg: Config, client: Any) -> Report:
    """Train (resuming from the newest checkpoint in ``cfg.out``) with batches read on ``client``."""
    from skybatch.pipeline.modeling import train

    return train(cfg, client)


def run(cfg: Config, client: Any = None) -> Report:
    """Train on ``client``, else the current Dask client, else a cluster from ``cfg.cluster``."""
    return run_job(run_with_client, cfg, client)
