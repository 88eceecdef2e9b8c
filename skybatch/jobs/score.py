"""The scoring job (``skybatch run score``): anomaly scores of a VAE, or a sky model's predictions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skybatch.jobs._apply import ApplyConfig
from skybatch.jobs._core import ResultReport, run_job

__all__ = ["Config", "Report", "run", "run_with_client"]

COMMAND = "score"
METHODS = ("vae", "population")


@dataclass
class Config(ApplyConfig):
    """Settings of `skybatch run score`.

    store: the (preprocessed) spectra store.
    model: a model directory from `skybatch run train`.
    batch_size: spectra per model call.
    top: size of the top-anomaly catalogue and plot.
    select: rank only the matching spectra (``["spectype=QSO", "z>2"]``); implies method population.
    method: population (default: within each SPECTYPE and redshift bin, with per-class PCA, line and
        composite features) or vae (robust z of misfit and latent rarity over the store).
    cluster: a cluster profile name, a YAML path, or a scheduler address.
    progress: show a progress bar on the terminal.
    storage_options: fsspec options of the store (credentials, endpoint).
    """

    top: int = 100
    select: list[str] | None = None
    method: str = "population"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"method: {self.method!r} is not one of {METHODS}")
        if not isinstance(self.top, int) or self.top < 0:
            raise ValueError(f"top: must be a non-negative integer, got {self.top!r}")


@dataclass
class Report(ResultReport):
    """Outcome of a scoring run: ``details`` holds ``map_model`` (the mapping's report), ``n_spectra``,
    ``top_parquet``, ``top_png`` and, for the population method, ``n_scored`` / ``select`` /
    ``spectrum_pngs``; for a sky model, its prediction outputs."""


def run_with_client(cfg: Config, client: Any) -> Report:
    """Score ``cfg.store`` with the model ``cfg.model`` on ``client`` (the model's kind picks the scorer)."""
    from skybatch.jobs.kinds import card_kind

    opts = cfg.storage_options or None
    if card_kind(cfg.model) == "sky_broadband":
        from skybatch.pipeline.sky_broadband import predict_broadband

        return Report.from_result(predict_broadband(cfg.store, cfg.model, client, batch_size=cfg.batch_size,
                                                    storage_options=opts, progress=cfg.progress))
    from skybatch.pipeline.modeling import score

    return Report.from_result(score(cfg.store, cfg.model, top=cfg.top, client=client, batch_size=cfg.batch_size,
                                    storage_options=opts, progress=cfg.progress, select=cfg.select,
                                    method=cfg.method))


def run(cfg: Config, client: Any = None) -> Report:
    """Score on ``client``, else the current Dask client, else a cluster from ``cfg.cluster``."""
    return run_job(run_with_client, cfg, client)
