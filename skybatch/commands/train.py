"""`skybatch run train`: train a model on a store, streaming shuffled chunks (resumable)."""

from __future__ import annotations

import argparse

HELP = "train a spectral VAE or classifier (or the tile encoder) on a store; checkpoints and resumes"

_SETTINGS = ("steps", "batch_size", "learning_rate", "optimizer", "weight_decay", "checkpoint_every",
             "validate_every", "seed", "val_fraction", "split_nside", "latent_dim", "width", "depth", "label",
             "prefetch")


def CONFIGS():
    from skybatch.pipeline.modeling import TrainJobConfig
    from skybatch.pipeline.tile_model import TileTrainConfig

    return (TrainJobConfig, TileTrainConfig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="the store to train on (preprocessed spectra, or a tile store)")
    p.add_argument("--model", help="vae | classifier | tile-encoder | sky-broadband | sky-ldm (required)")
    p.add_argument("--out", help="model directory (checkpoints, loss curves, model/)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--validate-every", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--val-fraction", type=float, default=None, help="fraction of HEALPix pixels held out")
    p.add_argument("--split-nside", type=int, default=None, help="HEALPix nside of the train/validation split")
    p.add_argument("--latent-dim", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--label", default=None, help="class column for the classifier (default spectype)")
    p.add_argument("--prefetch", type=int, default=None)
    from skybatch.commands.tiles import add_tile_arguments

    add_tile_arguments(p)
    p.add_argument("--selection", default=None, help="sky-ldm: dark | moon | twilight")
    p.add_argument("--vae", default=None, metavar="MODEL_DIR", help="sky-ldm: the VAE whose latents it models")
    p.add_argument("--conditions", default=None, help="sky models: comma-separated condition columns")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)


def run(args: argparse.Namespace) -> int:
    from skybatch.commands._config import build_config, load_config

    settings = load_config(args.config)
    flags = {k: getattr(args, k, None) for k in ("store", "model", "out", "cluster", "progress", *_SETTINGS)}
    model = flags.get("model") or settings.get("model")
    if model in ("sky-broadband", "sky-ldm"):
        from skybatch.commands.generate import run_sky_train

        return run_sky_train(args, settings)
    if model == "tile-encoder":
        from skybatch.commands.tiles import _TILE_SETTINGS, run_train

        flags = {k: getattr(args, k, None) for k in ("store", "out", "cluster", "progress", *_TILE_SETTINGS)}
        return run_train(args, settings, flags)
    from skybatch.pipeline.modeling import TrainJobConfig, TrainJobReport

    config = build_config(TrainJobConfig, settings, flags)
    from flows.models import train_flow

    from skybatch.commands._opts import storage_options_param

    settings = {k: getattr(config, k) for k in _SETTINGS}
    if config.storage_options:
        settings["storage_options"] = storage_options_param(config.storage_options, [config.store])
    rep = TrainJobReport(**train_flow(
        store=config.store, model=config.model, out=config.out, cluster=config.cluster, progress=config.progress,
        settings=settings,
    ))
    print(rep.summary())
    return rep.exit_code
