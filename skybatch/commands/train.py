"""`skybatch run train`: train a model on a store, streaming shuffled chunks (resumable)."""

from __future__ import annotations

import argparse

HELP = ("train a model on a store (spectral VAE or classifier, tile encoder, sky models, real/bogus on a difference "
        "store); checkpoints and resumes")

_SETTINGS = ("steps", "batch_size", "learning_rate", "optimizer", "weight_decay", "checkpoint_every",
             "validate_every", "seed", "val_fraction", "split_nside", "latent_dim", "width", "depth", "label",
             "prefetch")


def CONFIGS():
    from skybatch.pipeline.modeling import TrainJobConfig
    from skybatch.pipeline.tile_model import TileTrainConfig

    return (TrainJobConfig, TileTrainConfig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="the store to train on (preprocessed spectra, or a tile store)")
    from skybatch.jobs.kinds import KINDS

    p.add_argument("--model", help=" | ".join(KINDS) + " (required)")
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
    from skybatch.commands.realbogus import add_train_arguments

    add_train_arguments(p)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)


def run(args: argparse.Namespace) -> int:
    from skybatch.commands._config import ConfigError, build_config, load_config
    from skybatch.jobs.kinds import kind

    settings = load_config(args.config)
    flags = {k: getattr(args, k, None) for k in ("store", "model", "out", "cluster", "progress", *_SETTINGS)}
    model = flags.get("model") or settings.get("model")
    if model is None:
        from skybatch.commands._config import UsageError

        raise UsageError("missing --model (or `model:` in --config)")
    try:
        mk = kind(model)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if mk.train_job == "sky_train":
        from skybatch.commands.generate import run_sky_train

        return run_sky_train(args, settings)
    if mk.train_job == "tile_train":
        from skybatch.commands.tiles import _TILE_SETTINGS, run_train

        flags = {k: getattr(args, k, None) for k in ("store", "out", "cluster", "progress", *_TILE_SETTINGS)}
        return run_train(args, settings, flags)
    if mk.train_job == "realbogus":
        from skybatch.commands.realbogus import run_train as run_realbogus

        return run_realbogus(args, {k: v for k, v in settings.items() if k != "model"})
    from skybatch.jobs.train import Config, Report

    config = build_config(Config, settings, flags)
    from skybatch.orchestrate import run_flow
    from skybatch.orchestrate._common import flow_params
    from skybatch.orchestrate.models import train_flow

    rep = Report(**run_flow(train_flow, flow_params(config)))
    print(rep.summary())
    return rep.exit_code
