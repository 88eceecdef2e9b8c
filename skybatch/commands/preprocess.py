"""`skybatch run preprocess`: a spectra store into a model-ready store (grid, frame, scale)."""

from __future__ import annotations

import argparse
import dataclasses

HELP = "mask, rest-frame shift, flux-conserving resample and normalise a spectra store into a new store"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="input spectra store")
    p.add_argument("--out", help="output store (new, or one to resume)")
    p.add_argument("--grid", default=None, metavar="SPEC",
                   help="native | desi | sdss | desi-loglam | linear:START:STOP:STEP | loglam:START:STOP:STEP")
    p.add_argument("--rest-frame", action="store_true", default=None, help="shift each spectrum by 1/(1+z)")
    p.add_argument("--bad-redshift", choices=["drop", "observed"], default=None)
    p.add_argument("--normalize", choices=["median", "mean", "total", "none"], default=None)
    p.add_argument("--normalize-window", nargs=2, type=float, default=None, metavar=("LO", "HI"))
    p.add_argument("--mask-bits", default=None, help="desi | sdss | none | desi:COSMIC,NODATA | integer")
    p.add_argument("--sky-lines", action="store_true", default=None, help="mask strong sky lines")
    p.add_argument("--continuum", choices=["none", "smooth"], default=None)
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default=None)
    p.add_argument("--endpoint-url", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)


def run(args: argparse.Namespace) -> int:
    from skybatch.commands._config import ConfigError, build_config, load_config
    from skybatch.pipeline.preprocess import PreprocessConfig, PreprocessReport
    from skybatch.spectra import PreprocessRecipe

    settings = load_config(args.config)
    recipe_names = {f.name for f in dataclasses.fields(PreprocessRecipe) if f.init}
    recipe_settings = {k: settings.pop(k) for k in list(settings) if k in recipe_names}
    recipe_settings.update(settings.pop("recipe", None) or {})
    for name in recipe_names:
        v = getattr(args, name, None)
        if v is not None:
            recipe_settings[name] = tuple(v) if name == "normalize_window" else v
    try:
        recipe = PreprocessRecipe.from_dict(recipe_settings)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    flags = {k: getattr(args, k, None) for k in ("store", "out", "device", "cluster", "endpoint_url", "progress")}
    config = build_config(PreprocessConfig, {**settings, "recipe": recipe}, flags)
    from flows.preprocess import preprocess_flow

    rep = PreprocessReport(**preprocess_flow(
        store=config.store, out=config.out, recipe=config.recipe.to_dict(), device=config.device,
        cluster=config.cluster, endpoint_url=config.endpoint_url, anon=config.anon, progress=config.progress,
    ))
    print(rep.summary())
    print(f"open it: import xarray as xr; ds = xr.open_zarr({config.out!r})")
    return rep.exit_code
