"""The embedding job (``skybatch run embed``): a VAE's latent mean per spectrum, or (for a tile encoder)
per-tile, per-band embeddings (:mod:`skybatch.jobs.tile_embed`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skybatch.jobs._apply import ApplyConfig
from skybatch.jobs._core import ResultReport, run_job

__all__ = ["Config", "Report", "run", "run_with_client"]

COMMAND = "embed"


@dataclass
class Config(ApplyConfig):
    """Settings of `skybatch run embed`.

    store: the (preprocessed) spectra store, or a tile store for a tile encoder.
    model: a model directory from `skybatch run train` (vae or tile-encoder).
    batch_size: spectra per model call (a tile encoder uses its own default).
    cluster: a cluster profile name, a YAML path, or a scheduler address.
    progress: show a progress bar on the terminal.
    storage_options: fsspec options of the store (credentials, endpoint).
    """


@dataclass
class Report(ResultReport):
    """Outcome of an embedding run: ``details`` holds ``map_model`` (spectra), or ``n_tiles``,
    ``chunks_written``, ``region_arcsec`` and ``set_aside`` (tiles)."""

    @property
    def tiles(self) -> bool:
        return "n_tiles" in self.details


def run_with_client(cfg: Config, client: Any) -> Report:
    """Embed ``cfg.store`` with ``cfg.model`` on ``client`` (the model's kind picks spectra or tiles)."""
    from skybatch.jobs.kinds import kind_of_model

    kind = kind_of_model(cfg.model)
    if kind is not None and kind.name == "tile-encoder":
        from skybatch.jobs import tile_embed

        r = tile_embed.run_with_client(tile_embed.Config(store=cfg.store, model=cfg.model, cluster=cfg.cluster,
                                                         progress=cfg.progress,
                                                         storage_options=cfg.storage_options), client)
        return Report(**{k: getattr(r, k) for k in ("store", "model", "exit_code", "failed_chunks", "details")})
    from skybatch.pipeline.modeling import embed

    return Report.from_result(embed(cfg.store, cfg.model, client=client, batch_size=cfg.batch_size,
                                    storage_options=cfg.storage_options or None, progress=cfg.progress))


def run(cfg: Config, client: Any = None) -> Report:
    """Embed on ``client``, else the current Dask client, else a cluster from ``cfg.cluster``."""
    return run_job(run_with_client, cfg, client)
