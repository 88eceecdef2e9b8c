"""`skybatch run generate`: sky spectra from a sky-ldm model for a table of conditions (a spectra store).

Also the sky-model branch of `skybatch run train` (``--model sky-broadband | sky-ldm``):
:func:`run_sky_train`, called by :mod:`skybatch.commands.train`.
"""

from __future__ import annotations

import argparse

HELP = "generate sky spectra from a sky-ldm model for a Parquet table of conditions (writes a spectra store)"

SKY_MODELS = ("sky-broadband", "sky-ldm")
_SKY_TRAIN = ("steps", "batch_size", "learning_rate", "checkpoint_every", "seed", "val_fraction")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="a sky-ldm model from `skybatch run train`")
    p.add_argument("--conditions", required=True, metavar="PARQUET",
                   help="one row per spectrum to generate; columns named as the model's conditions (any case)")
    p.add_argument("--out", required=True, metavar="STORE", help="the spectra store to write (resumable)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance w (0 unconditional, "
                   "1 conditional; default 2.0)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default 32)")
    p.add_argument("--sampler", choices=["heun", "euler"], default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--n-per-row", type=int, default=None, help="spectra per conditions row (default 1)")
    p.add_argument("--chunk-spectra", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)


def run(args: argparse.Namespace) -> int:
    from skybatch.commands._config import build_config, load_config
    from skybatch.pipeline.sky_generate import GenerateConfig, generate

    names = ("model", "conditions", "out", "guidance", "steps", "sampler", "seed", "n_per_row", "chunk_spectra",
             "batch_size", "cluster", "progress")
    config = build_config(GenerateConfig, load_config(args.config), {k: getattr(args, k, None) for k in names})
    rep = generate(config)
    print(rep.summary())
    return rep.exit_code


def run_sky_train(args: argparse.Namespace, settings: dict) -> int:
    """`skybatch run train --model sky-broadband | sky-ldm` (flags override the YAML settings)."""
    from skybatch.commands._config import build_config

    model = getattr(args, "model", None) or settings.get("model")
    settings = {k: v for k, v in settings.items() if k != "model"}
    flags = {k: getattr(args, k, None) for k in ("store", "out", "cluster", "progress", *_SKY_TRAIN)}
    conds = getattr(args, "conditions", None)
    if conds:
        flags["conditions"] = tuple(c.strip() for c in conds.split(",") if c.strip())
    if model == "sky-broadband":
        from skybatch.pipeline.sky_broadband import SkyBroadbandConfig, train_broadband

        flags.update(width=getattr(args, "width", None), depth=getattr(args, "depth", None))
        rep = train_broadband(build_config(SkyBroadbandConfig, settings, flags))
        print(f"model: {rep['model_dir']}\nsteps: {rep['steps']} (resumed from {rep['start_step']}); exposures: "
              f"{rep['n_train']} train, {rep['n_heldout']} held out (by HEALPix pixel)")
        for b, r in rep["heldout_rms"].items():
            print(f"  {b}: held-out RMS {r:.3f} mag (training-mean baseline {rep['baseline_rms'][b]:.3f} mag)")
        print(f"residuals: {rep['residuals_png']}\nloss curve: {rep['loss_curve']}")
        return 0
    from skybatch.pipeline.sky_ldm import SkyLDMConfig, train_sky_ldm

    flags.update(vae=getattr(args, "vae", None), selection=getattr(args, "selection", None))
    rep = train_sky_ldm(build_config(SkyLDMConfig, settings, flags))
    print(f"model: {rep['model_dir']}\nselection: {rep['selection']} ({rep['n_train']} train, {rep['n_heldout']} "
          f"held out); conditions: {', '.join(rep['conditions'])}\nsteps: {rep['steps']} (resumed from "
          f"{rep['start_step']}); train loss {rep['final_train_loss']:.4g}, val loss {rep['final_val_loss']}\n"
          f"loss curve: {rep['loss_curve']}")
    return 0
