"""The tile-encoder training job (``skybatch run train --model tile-encoder``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skybatch.jobs._core import ResultReport, run_job
from skybatch.pipeline.tile_model import TileTrainConfig as Config

__all__ = ["Config", "Report", "run", "run_with_client"]

COMMAND = "train"


@dataclass
class Report(ResultReport):
    """Outcome of a tile-encoder training run. ``model`` is the model directory; ``details`` holds
    ``steps``, ``start_step``, ``metrics`` (cross-band retrieval, effective dimension), ``png`` (diagnostic
    plots), ``region_arcsec``, ``grid_scale_arcsec``, ``set_aside`` and ``seconds``."""

    def summary(self) -> str:
        d, m = self.details, self.details.get("metrics") or {}
        return (f"model: {self.model}\nsteps: {d['steps']} (resumed from {d['start_step']})\n"
                f"sky region: {d['region_arcsec']:.2f} arcsec on a {d['grid_scale_arcsec']:.3f} arcsec/px grid; "
                f"planes set aside: {d.get('set_aside') or 'none'}\n"
                f"cross-band retrieval top-1: {m.get('retrieval_top1_mean'):.3f} (chance "
                f"{m.get('retrieval_chance'):.3f}); min effective dimension {m.get('effective_dim_min'):.2f}\n"
                "diagnostics: " + ", ".join((d.get("png") or {}).values()))


def run_with_client(cfg: Config, client: Any) -> Report:
    """Train the tile encoder on ``cfg.store`` (resumes from ``cfg.out``) with tiles read on ``client``."""
    from skybatch.pipeline.tile_model import train_tile_encoder

    return Report.from_result(train_tile_encoder(cfg, client))


def run(cfg: Config, client: Any = None) -> Report:
    """Train on ``client``, else the current Dask client, else a cluster from ``cfg.cluster``."""
    return run_job(run_with_client, cfg, client)
