"""`skybatch run train --model tile-encoder`: the tile-store side of the train command."""

from __future__ import annotations

import argparse
from typing import Any

_TILE_SETTINGS = ("region_arcsec", "image_size", "max_centre_offset_arcsec", "patch", "width", "depth", "heads",
                  "contrastive_weight", "jepa_weight", "steps", "batch_size", "learning_rate", "checkpoint_every",
                  "prefetch", "diagnostic_tiles", "seed")


def add_tile_arguments(p: argparse.ArgumentParser) -> None:
    """The tile-encoder flags of `skybatch run train` (--width/--depth/--steps... are shared)."""
    p.add_argument("--region-arcsec", type=float, default=None,
                   help="tile encoder: side of the sky region seen in every band, arcsec (default: the largest "
                        "square inside every view's footprint)")
    p.add_argument("--image-size", type=int, default=None, help="tile encoder: sky grid in px (region / size = scale)")
    p.add_argument("--max-centre-offset-arcsec", type=float, default=None,
                   help="tile encoder: set aside planes whose WCS centre is farther than this from the tile's")
    p.add_argument("--patch", type=int, default=None, help="tile encoder: token size in grid px")
    p.add_argument("--heads", type=int, default=None, help="tile encoder: attention heads")
    p.add_argument("--contrastive-weight", type=float, default=None, help="tile encoder: InfoNCE weight (0 = off)")
    p.add_argument("--jepa-weight", type=float, default=None, help="tile encoder: token JEPA weight")
    p.add_argument("--diagnostic-tiles", type=int, default=None, help="tile encoder: tiles embedded for the card")


def run_train(args: argparse.Namespace, settings: dict[str, Any], flags: dict[str, Any]) -> int:
    from skybatch.commands._config import build_config
    from skybatch.jobs.tile_train import Config

    settings = {k: v for k, v in settings.items() if k != "model"}
    flags = {k: v for k, v in flags.items() if k != "model"}
    config = build_config(Config, settings, flags)
    from skybatch.orchestrate import run_flow
    from skybatch.orchestrate._common import flow_params
    from skybatch.orchestrate.models import tile_train_flow

    out = run_flow(tile_train_flow, flow_params(config))
    out["model_dir"] = out.get("model_dir") or out["model"]
    m = out["metrics"]
    print(f"model: {out['model_dir']}\nsteps: {out['steps']} (resumed from {out['start_step']})\n"
          f"sky region: {out['region_arcsec']:.2f} arcsec on a {out['grid_scale_arcsec']:.3f} arcsec/px grid; "
          f"planes set aside: {out.get('set_aside') or 'none'}\n"
          f"cross-band retrieval top-1: {m.get('retrieval_top1_mean'):.3f} (chance {m.get('retrieval_chance'):.3f}); "
          f"min effective dimension {m.get('effective_dim_min'):.2f}\ndiagnostics: "
          + ", ".join(out["png"].values()))
    return int(out["exit_code"])
