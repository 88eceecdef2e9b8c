"""`skybatch run train --model tile-encoder`: the tile-store side of the train command."""

from __future__ import annotations

import argparse
from typing import Any

_TILE_SETTINGS = ("image_size", "patch", "width", "depth", "heads", "steps", "batch_size", "learning_rate",
                  "checkpoint_every", "seed")


def run_train(args: argparse.Namespace, settings: dict[str, Any], flags: dict[str, Any]) -> int:
    from skybatch.commands._config import build_config
    from skybatch.pipeline.tile_model import TileTrainConfig

    settings = {k: v for k, v in settings.items() if k != "model"}
    flags = {k: v for k, v in flags.items() if k != "model"}
    config = build_config(TileTrainConfig, settings, flags)
    from flows.models import tile_train_flow

    out = tile_train_flow(store=config.store, out=config.out, cluster=config.cluster, progress=config.progress,
                          settings={k: getattr(config, k) for k in _TILE_SETTINGS})
    m = out["metrics"]
    print(f"model: {out['model_dir']}\nsteps: {out['steps']} (resumed from {out['start_step']})\n"
          f"cross-band retrieval top-1: {m.get('retrieval_top1_mean'):.3f} (chance {m.get('retrieval_chance'):.3f}); "
          f"min effective dimension {m.get('effective_dim_min'):.2f}\ndiagnostics: "
          + ", ".join(out["png"].values()))
    return int(out["exit_code"])
