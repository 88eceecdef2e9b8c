"""The tile embedding job: per-tile, per-band global embeddings of a trained tile encoder, written into
the tile store's ``embeddings`` group (``skybatch run embed --model TILE_ENCODER_DIR``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skybatch.jobs._apply import ApplyConfig
from skybatch.jobs._core import ResultReport, run_job

__all__ = ["Config", "Report", "run", "run_with_client"]

COMMAND = "embed"


@dataclass
class Config(ApplyConfig):
    """Settings of the tile embedding job.

    store: the tile store.
    model: a tile-encoder model directory from `skybatch run train --model tile-encoder`.
    batch_size: tiles per encoder call.
    cluster: a cluster profile name, a YAML path, or a scheduler address.
    progress: show a progress bar on the terminal.
    storage_options: fsspec options of the store (credentials, endpoint).
    """

    batch_size: int = 32


@dataclass
class Report(ResultReport):
    """Outcome of a tile embedding run: ``details`` holds ``n_tiles``, ``chunks_written``,
    ``region_arcsec`` and ``set_aside``."""

    def summary(self) -> str:
        lines = [f"store: {self.store}", f"model: {self.model}",
                 f"wrote: embeddings/embedding (tile, band_key, embedding_dim) for {self.details.get('n_tiles')} "
                 "tiles; open with xr.open_zarr(store, group='embeddings')"]
        lines += [f"FAILED chunk {c['chunk']}: {c['error']} -- re-run to retry" for c in self.failed_chunks]
        return "\n".join(lines)


def run_with_client(cfg: Config, client: Any) -> Report:
    """Embed every tile of ``cfg.store`` with the encoder ``cfg.model`` on ``client``."""
    from skybatch.pipeline.tile_model import embed_tiles_store

    return Report.from_result(embed_tiles_store(cfg.store, cfg.model, client, batch_size=cfg.batch_size,
                                                storage_options=cfg.storage_options or None,
                                                progress=cfg.progress))


def run(cfg: Config, client: Any = None) -> Report:
    """Embed on ``client``, else the current Dask client, else a cluster from ``cfg.cluster``."""
    return run_job(run_with_client, cfg, client)
