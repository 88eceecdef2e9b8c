"""The classification job (``skybatch run classify``): calibrated class probabilities of a spectral
classifier, or real/bogus scores of a difference store's candidates (a ``realbogus`` model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skybatch.jobs._apply import ApplyConfig
from skybatch.jobs._core import ResultReport, run_job

__all__ = ["Config", "Report", "run", "run_with_client"]

COMMAND = "classify"


@dataclass
class Config(ApplyConfig):
    """Settings of `skybatch run classify`.

    store: the (preprocessed) spectra store, or a difference store for a real/bogus model.
    model: a model directory from `skybatch run train` (classifier or realbogus).
    batch_size: spectra per model call.
    cluster: a cluster profile name, a YAML path, or a scheduler address.
    progress: show a progress bar on the terminal.
    storage_options: fsspec options of the store (credentials, endpoint).
    """


@dataclass
class Report(ResultReport):
    """Outcome of a classification run. A spectral classifier: ``details`` holds ``map_model``,
    ``temperature`` and ``classes``. A real/bogus model: ``n_candidates``, ``n_real``, ``threshold``,
    ``completeness`` and ``catalogue`` (the Parquet file that gained realbogus_score / realbogus_real)."""

    @property
    def realbogus(self) -> bool:
        return "n_candidates" in self.details


def run_with_client(cfg: Config, client: Any) -> Report:
    """Classify ``cfg.store`` with ``cfg.model`` on ``client`` (a real/bogus model runs in this process)."""
    from skybatch.jobs import realbogus
    from skybatch.jobs.kinds import kind_of_model

    kind = kind_of_model(cfg.model)
    if kind is not None and kind.name == "realbogus":
        r = realbogus.classify(realbogus.ClassifyConfig(store=cfg.store, model=cfg.model,
                                                        storage_options=cfg.storage_options))
        return Report(store=cfg.store, model=cfg.model, details=dict(r.details))
    from skybatch.pipeline.modeling import classify

    return Report.from_result(classify(cfg.store, cfg.model, client=client, batch_size=cfg.batch_size,
                                       storage_options=cfg.storage_options or None, progress=cfg.progress))


def run(cfg: Config, client: Any = None) -> Report:
    """Classify on ``client``, else the current Dask client, else a cluster from ``cfg.cluster``
    (a real/bogus model needs no cluster and starts none)."""
    from skybatch.jobs.kinds import kind_of_model

    kind = kind_of_model(cfg.model)
    if kind is not None and kind.name == "realbogus":
        return run_with_client(cfg, client)
    return run_job(run_with_client, cfg, client)
